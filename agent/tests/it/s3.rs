//! In-process S3 server (s3s-fs over a temp directory, real SigV4 checked by `SimpleAuth`)
//! for the S3 user-space tests. A bucket is a sub-directory of the root; objects are files
//! at `<root>/<bucket>/<key>` (s3s-fs keeps its sidecar files directly in the root).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use hyper_util::rt::{TokioExecutor, TokioIo};
use s3s::auth::SimpleAuth;
use s3s::service::S3ServiceBuilder;

pub const ACCESS_KEY: &str = "testing";
pub const SECRET_KEY: &str = "testing-secret";

pub struct S3Server {
    pub addr: SocketAddr,
    root: tempfile::TempDir,
}

impl S3Server {
    /// Serve a fresh root holding `buckets` on a loopback port (until the test's runtime
    /// ends).
    pub async fn start(buckets: &[&str]) -> S3Server {
        let root = tempfile::tempdir().unwrap();
        for bucket in buckets {
            std::fs::create_dir_all(root.path().join(bucket)).unwrap();
        }
        let mut builder = S3ServiceBuilder::new(s3s_fs::FileSystem::new(root.path()).unwrap());
        builder.set_auth(SimpleAuth::from_single(ACCESS_KEY, SECRET_KEY));
        let service = builder.build();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let http = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            while let Ok((sock, _)) = listener.accept().await {
                let conn = http
                    .serve_connection(TokioIo::new(sock), service.clone())
                    .into_owned();
                tokio::spawn(async move {
                    let _ = conn.await;
                });
            }
        });
        S3Server { addr, root }
    }

    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Local path of object `key` of `bucket`.
    pub fn object_path(&self, bucket: &str, key: &str) -> PathBuf {
        self.root.path().join(bucket).join(key)
    }

    /// Objects (files) under `prefix` (a directory) of `bucket`.
    pub fn files(&self, bucket: &str, prefix: &str) -> Vec<PathBuf> {
        crate::harness::files_under(&self.root.path().join(bucket).join(prefix))
    }

    pub fn root(&self) -> &Path {
        self.root.path()
    }
}
