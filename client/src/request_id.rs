//! Puts the current request id ([`common::request_id::current`]) into the metadata of every
//! outgoing call, so the coordinator and agents log under the id the gateway chose.

use tonic::metadata::MetadataValue;
use tonic::service::Interceptor;

#[derive(Debug, Clone, Copy, Default)]
pub struct RequestIdInterceptor;

impl Interceptor for RequestIdInterceptor {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(id) = common::request_id::current()
            && let Ok(value) = MetadataValue::try_from(id.as_str())
        {
            req.metadata_mut().insert(common::request_id::HEADER, value);
        }
        Ok(req)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn copies_the_scoped_id_only() {
        let mut i = RequestIdInterceptor;
        let out = i.call(tonic::Request::new(())).unwrap();
        assert!(out.metadata().get("x-request-id").is_none());
        let out = common::request_id::scope("rid-9".to_owned(), async {
            i.call(tonic::Request::new(())).unwrap()
        })
        .await;
        assert_eq!(out.metadata().get("x-request-id").unwrap(), "rid-9");
    }
}
