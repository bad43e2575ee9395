//! Errors of the redundancy engine and their codes.

use common::{CodedError, ErrorCode};
use snafu::Snafu;

#[derive(Debug, Snafu)]
#[snafu(visibility(pub(crate)))]
pub enum Error {
    #[snafu(display("invalid redundancy policy: {reason}"))]
    ValidatePolicy { reason: String },

    #[snafu(display("redundancy type {kind} cannot be used as a policy"))]
    NotAPolicy { kind: String },

    #[snafu(display("failed to read the object stream"))]
    ReadInput { source: std::io::Error },

    #[snafu(display("the consumer of block {index} went away"))]
    SendBlock { index: usize },

    #[snafu(display("failed to encode stripe {stripe}"))]
    EncodeStripe {
        stripe: u64,
        source: reed_solomon_simd::Error,
    },

    #[snafu(display("failed to decode stripe {stripe}"))]
    DecodeStripe {
        stripe: u64,
        source: reed_solomon_simd::Error,
    },

    #[snafu(display("coding task failed"))]
    JoinCoder { source: tokio::task::JoinError },

    #[snafu(display(
        "range offset {offset} length {length:?} is outside an object of {size} bytes"
    ))]
    BadRange {
        offset: u64,
        length: Option<u64>,
        size: u64,
    },

    #[snafu(display("policy {kind} has {expected} blocks but {got} block slots were given"))]
    BlockCount {
        kind: &'static str,
        expected: usize,
        got: usize,
    },

    #[snafu(display(
        "stripe {stripe} has only {usable} usable blocks of the {needed} needed to rebuild it"
    ))]
    NotEnoughBlocks {
        stripe: u64,
        usable: usize,
        needed: usize,
    },

    #[snafu(display("no replica could serve the bytes from offset {offset} ({tried} tried)"))]
    ReplicasExhausted { offset: u64, tried: usize },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl CodedError for Error {
    fn code(&self) -> ErrorCode {
        match self {
            Error::ValidatePolicy { .. }
            | Error::NotAPolicy { .. }
            | Error::BadRange { .. }
            | Error::BlockCount { .. } => ErrorCode::BadArgument,
            Error::ReadInput { .. }
            | Error::SendBlock { .. }
            | Error::NotEnoughBlocks { .. }
            | Error::ReplicasExhausted { .. } => ErrorCode::Unavailable,
            Error::EncodeStripe { .. } | Error::DecodeStripe { .. } | Error::JoinCoder { .. } => {
                ErrorCode::Internal
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lost_blocks_are_retryable_and_bad_policies_are_bad_arguments() {
        let lost = Error::NotEnoughBlocks {
            stripe: 3,
            usable: 3,
            needed: 4,
        };
        assert_eq!(lost.code(), ErrorCode::Unavailable);
        assert!(
            lost.to_string()
                .contains("only 3 usable blocks of the 4 needed")
        );
        let bad = Error::ValidatePolicy {
            reason: "k must be at least 1".into(),
        };
        assert_eq!(bad.code(), ErrorCode::BadArgument);
    }
}
