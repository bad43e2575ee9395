//! A real S3 server in-process: s3s-fs (SigV4 enforced) on a `127.0.0.1:0` listener, with
//! buckets as sub-directories of a temp dir.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use hyper_util::rt::{TokioExecutor, TokioIo};
use s3s::auth::SimpleAuth;
use s3s::service::S3ServiceBuilder;

pub const ACCESS_KEY: &str = "testing-ak";
pub const SECRET_KEY: &str = "testing-sk";

pub struct S3Server {
    pub addr: SocketAddr,
    pub root: PathBuf,
    task: tokio::task::JoinHandle<()>,
}

impl S3Server {
    /// Serve `root`; each name in `buckets` becomes a bucket.
    pub async fn start(root: &Path, buckets: &[&str]) -> S3Server {
        for b in buckets {
            std::fs::create_dir_all(root.join(b)).unwrap();
        }
        let mut builder = S3ServiceBuilder::new(s3s_fs::FileSystem::new(root).unwrap());
        builder.set_auth(SimpleAuth::from_single(ACCESS_KEY, SECRET_KEY));
        let service = builder.build();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            let http = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            loop {
                let Ok((sock, _)) = listener.accept().await else {
                    return;
                };
                let conn = http
                    .serve_connection(TokioIo::new(sock), service.clone())
                    .into_owned();
                tokio::spawn(async move {
                    let _ = conn.await;
                });
            }
        });
        S3Server {
            addr,
            root: root.to_path_buf(),
            task,
        }
    }

    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Files stored under `bucket/prefix` (s3s-fs keeps objects as plain files).
    pub fn files(&self, bucket: &str, prefix: &str) -> Vec<PathBuf> {
        crate::list_files(&self.root.join(bucket).join(prefix))
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}
