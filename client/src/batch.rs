//! Per-item results of the batch calls (`BeginUploads`, `CommitUploads`): each item of a
//! batch fails on its own with the code and message a single call would have carried.

use common::ErrorCode;
use proto::common::ItemError;

/// The item error a failed single call would have answered with (internal errors are
/// logged with their chain and reported as "internal error", as for a single call).
pub fn item_error<E: common::CodedError>(err: &E) -> ItemError {
    status_item_error(&common::error::to_status(err))
}

/// The item error of a failed single call's status (its `x-jcs-code`, else the code
/// derived from the gRPC code, and its message).
pub fn status_item_error(status: &tonic::Status) -> ItemError {
    ItemError {
        code: common::error::code_of(status).as_str().to_owned(),
        message: status.message().to_owned(),
    }
}

/// The status a single call would have failed with; an unknown code is internal.
pub fn item_status(err: ItemError) -> tonic::Status {
    let code = ErrorCode::parse(&err.code).unwrap_or(ErrorCode::Internal);
    common::error::status(code, err.message)
}

/// A batch answer whose length differs from the request's: the peer is broken.
pub fn length_mismatch(sent: usize, got: usize) -> tonic::Status {
    common::error::status(
        ErrorCode::Internal,
        format!("batch call answered {got} results for {sent} items"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, snafu::Snafu)]
    #[snafu(display("package 7 not found"))]
    struct Missing;
    impl common::CodedError for Missing {
        fn code(&self) -> ErrorCode {
            ErrorCode::NotFound
        }
    }

    #[test]
    fn item_errors_round_trip_code_and_message() {
        let status = item_status(item_error(&Missing));
        assert_eq!(common::error::code_of(&status), ErrorCode::NotFound);
        assert_eq!(status.message(), "package 7 not found");
        let unknown = item_status(ItemError {
            code: "Weird".into(),
            message: "x".into(),
        });
        assert_eq!(common::error::code_of(&unknown), ErrorCode::Internal);
    }
}
