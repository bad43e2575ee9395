//! The client commands themselves.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use futures::StreamExt;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::addr::{Location, Remote, join};
use super::api::{Api, Object, expect_object};
use super::config::{self, Settings};
use super::error::{Error, Result};
use super::output::{Out, human_size};
use super::transfer::{self, FileReport, TransferOptions};
use super::{
    BucketCommand, ClientArgs, ClientCommand, PackageCommand, SpaceCommand, SpaceSpecArgs,
    SyncCommand, TransferArgs,
};

/// Entries per delete/move/clone request.
const BATCH: usize = 1000;

pub async fn run(args: &ClientArgs, command: ClientCommand, out: &Out) -> Result<()> {
    let settings = config::resolve(
        args.config_file.as_deref(),
        args.url.clone(),
        args.access_key.clone(),
        args.secret_key.clone(),
        None,
    )?;
    let api = Api::new(&settings.url, settings.credentials()?)?;
    match command {
        ClientCommand::Bucket(c) => bucket(&api, out, c).await,
        ClientCommand::Package(c) => package(&api, out, c).await,
        ClientCommand::Ls {
            target,
            long,
            recursive,
            page_size,
        } => ls(&api, out, target.as_deref(), long, recursive, page_size).await,
        ClientCommand::Cp { src, dst, transfer } => {
            cp(&api, out, &settings, &src, &dst, transfer).await
        }
        ClientCommand::Rm { target, recursive } => rm(&api, out, &target, recursive).await,
        ClientCommand::Mv {
            src,
            dst,
            recursive,
        } => mv(&api, out, &src, &dst, recursive).await,
        ClientCommand::Space(c) => space(&api, out, c).await,
        ClientCommand::Sync(c) => sync(&api, out, c).await,
    }
}

fn to_json<T: serde::Serialize>(v: &T) -> Value {
    serde_json::to_value(v).unwrap_or(Value::Null)
}

// ---------- buckets and packages ----------

async fn bucket(api: &Api, out: &Out, c: BucketCommand) -> Result<()> {
    match c {
        BucketCommand::Ls => {
            for b in api.buckets().await? {
                out.either(&to_json(&b), &b.name);
            }
        }
        BucketCommand::Create { name } => {
            #[derive(Deserialize)]
            struct D {
                bucket: super::api::Bucket,
            }
            let d: D = api.post("bucket/create", &json!({ "name": name })).await?;
            out.either(
                &to_json(&d.bucket),
                &format!(
                    "created bucket {} (id {})",
                    d.bucket.name, d.bucket.bucket_id
                ),
            );
        }
        BucketCommand::Rm { name } => {
            let b = api.bucket(&name).await?;
            let _: Value = api
                .post("bucket/delete", &json!({ "bucketID": b.bucket_id }))
                .await?;
            out.either(
                &json!({ "deleted": { "bucketID": b.bucket_id, "name": b.name } }),
                &format!("deleted bucket {}", b.name),
            );
        }
    }
    Ok(())
}

async fn package(api: &Api, out: &Out, c: PackageCommand) -> Result<()> {
    match c {
        PackageCommand::Ls { bucket } => {
            let r = Remote::parse(&bucket)?;
            list_packages(api, out, &r.bucket).await?;
        }
        PackageCommand::Create { target } => {
            let r = Remote::parse(&target)?;
            let name = r.need_package("package create")?;
            let b = api.bucket(&r.bucket).await?;
            #[derive(Deserialize)]
            struct D {
                package: super::api::Package,
            }
            let d: D = api
                .post(
                    "package/create",
                    &json!({ "bucketID": b.bucket_id, "name": name }),
                )
                .await?;
            out.either(
                &to_json(&d.package),
                &format!(
                    "created package {}/{} (id {})",
                    r.bucket, d.package.name, d.package.package_id
                ),
            );
        }
        PackageCommand::Rm { target } => {
            let r = Remote::parse(&target)?;
            let name = r.need_package("package rm")?;
            let p = api.package(&r.bucket, name).await?;
            let _: Value = api
                .post("package/delete", &json!({ "packageID": p.package_id }))
                .await?;
            out.either(
                &json!({ "deleted": to_json(&p) }),
                &format!("deleted package {}/{}", r.bucket, p.name),
            );
        }
    }
    Ok(())
}

async fn list_packages(api: &Api, out: &Out, bucket: &str) -> Result<()> {
    let b = api.bucket(bucket).await?;
    for p in api.packages(b.bucket_id).await? {
        out.either(&to_json(&p), &p.name);
    }
    Ok(())
}

// ---------- ls ----------

fn long_line(o: &Object) -> String {
    format!(
        "{:>12}  {:<24}  {:>8}  {}",
        o.size, o.update_time, o.object_id, o.path
    )
}

async fn ls(
    api: &Api,
    out: &Out,
    target: Option<&str>,
    long: bool,
    recursive: bool,
    page_size: u32,
) -> Result<()> {
    let Some(target) = target else {
        for b in api.buckets().await? {
            let human = if long {
                format!("{:>8}  {}", b.bucket_id, b.name)
            } else {
                b.name.clone()
            };
            out.either(&to_json(&b), &human);
        }
        return Ok(());
    };
    let r = Remote::parse(target)?;
    let Some(pkg_name) = r.package.as_deref() else {
        return list_packages(api, out, &r.bucket).await;
    };
    let pkg = api.package(&r.bucket, pkg_name).await?;
    let mut token = String::new();
    loop {
        let page = api
            .list_page(pkg.package_id, &r.path, true, recursive, page_size, &token)
            .await?;
        for p in &page.common_prefixes {
            let human = if long {
                format!("{:>12}  {:<24}  {:>8}  {p}", "DIR", "", "")
            } else {
                p.clone()
            };
            out.either(&json!({ "prefix": p }), &human);
        }
        for o in &page.objects {
            let human = if long { long_line(o) } else { o.path.clone() };
            out.either(&to_json(o), &human);
        }
        if !page.is_truncated || page.next_continuation_token.is_empty() {
            break;
        }
        token = page.next_continuation_token;
    }
    Ok(())
}

/// Every object under a directory-like prefix (`dir` means `dir/`; `""` the whole package).
async fn list_all(api: &Api, package_id: u64, prefix: &str) -> Result<Vec<Object>> {
    let mut all = Vec::new();
    let mut token = String::new();
    loop {
        let page = api
            .list_page(package_id, prefix, true, true, 1000, &token)
            .await?;
        all.extend(page.objects);
        if !page.is_truncated || page.next_continuation_token.is_empty() {
            break;
        }
        token = page.next_continuation_token;
    }
    Ok(all)
}

fn dir_prefix(path: &str) -> String {
    if path.is_empty() || path.ends_with('/') {
        path.to_owned()
    } else {
        format!("{path}/")
    }
}

fn basename(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

// ---------- cp ----------

fn transfer_options(settings: &Settings, t: &TransferArgs) -> TransferOptions {
    TransferOptions {
        jobs: t.jobs.max(1),
        multipart_threshold: t.multipart_threshold,
        pack: transfer::PackLimits {
            file_max: t.pack_file_max,
            files: t.pack_files.max(1),
            bytes: t.pack_bytes,
        },
        part_size: t.part_size,
        state_dir: t
            .state_dir
            .clone()
            .unwrap_or_else(|| settings.state_dir.clone()),
        abort_after_parts: std::env::var("JCS_TEST_ABORT_AFTER_PARTS")
            .ok()
            .and_then(|v| v.parse().ok()),
    }
}

/// Print the per-file reports and the summary; fail with `Partial` when some failed.
fn finish(
    out: &Out,
    verb: &str,
    reports: Vec<std::result::Result<FileReport, (String, Error)>>,
) -> Result<()> {
    let total = reports.len();
    let mut failed = 0;
    let mut bytes = 0;
    let mut last_err = None;
    for r in reports {
        match r {
            Ok(rep) => {
                bytes += rep.bytes;
                out.json(&to_json(&rep));
            }
            Err((path, e)) => {
                failed += 1;
                out.json(
                    &json!({ "path": path, "error": e.to_string(), "exitCode": e.exit_code() }),
                );
                out.error(&format!("jcs: {path}: {e}"));
                last_err = Some(e);
            }
        }
    }
    out.text(&format!(
        "{verb} {} files, {}{}",
        total - failed,
        human_size(bytes),
        if failed > 0 {
            format!(", {failed} failed")
        } else {
            String::new()
        }
    ));
    match (failed, last_err) {
        (0, _) => Ok(()),
        // A single file that failed keeps its own error (and exit code).
        (1, Some(e)) if total == 1 => Err(e),
        _ => Err(Error::Partial { failed, total }),
    }
}

async fn cp(
    api: &Api,
    out: &Out,
    settings: &Settings,
    src: &str,
    dst: &str,
    t: TransferArgs,
) -> Result<()> {
    let opts = transfer_options(settings, &t);
    match (Location::parse(src)?, Location::parse(dst)?) {
        (Location::Local(l), Location::Remote(r)) => {
            upload(api, out, &opts, &l, &r, t.recursive).await
        }
        (Location::Remote(r), Location::Local(l)) => {
            download(api, out, &opts, &r, &l, t.recursive).await
        }
        (Location::Remote(a), Location::Remote(b)) => clone(api, out, &a, &b, t.recursive).await,
        (Location::Local(_), Location::Local(_)) => Err(Error::usage(
            "cp needs a jcs://bucket/package/path on at least one side",
        )),
    }
}

async fn upload(
    api: &Api,
    out: &Out,
    opts: &TransferOptions,
    local: &Path,
    r: &Remote,
    recursive: bool,
) -> Result<()> {
    let pkg_name = r.need_package("cp")?;
    let meta = std::fs::metadata(local).map_err(|e| Error::io("reading", local, e))?;
    let pkg = api.package(&r.bucket, pkg_name).await?;
    let files: Vec<(PathBuf, String, u64)> = if meta.is_dir() {
        if !recursive {
            return Err(Error::usage(format!(
                "{} is a directory (use -r)",
                local.display()
            )));
        }
        let root = local.to_path_buf();
        tokio::task::spawn_blocking(move || transfer::walk(&root))
            .await
            .map_err(|e| Error::io("listing", local, std::io::Error::other(e)))??
            .into_iter()
            .map(|(p, rel, size)| {
                let dest = join(&r.path, &rel);
                (p, dest, size)
            })
            .collect()
    } else {
        let name = local
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or_else(|| Error::usage(format!("{} has no UTF-8 file name", local.display())))?;
        let dest = if r.path.is_empty() || r.path.ends_with('/') {
            format!("{}{name}", r.path)
        } else {
            r.path.clone()
        };
        vec![(local.to_path_buf(), dest, meta.len())]
    };
    let many = files.len() > 1;
    let total_bytes: u64 = files.iter().map(|f| f.2).sum();
    let total =
        many.then(|| Arc::new(out.bytes_bar(total_bytes, &format!("{} files", files.len()))));
    let items = files
        .into_iter()
        .map(|(local, path, size)| transfer::UploadItem { local, path, size })
        .collect();
    let jobs = if many {
        transfer::plan_uploads(items, opts)
    } else {
        items.into_iter().map(transfer::UploadJob::One).collect()
    };
    let reports: Vec<_> = futures::stream::iter(jobs)
        .map(|job| {
            let total = total.clone();
            async move {
                match job {
                    transfer::UploadJob::Pack(items) => {
                        transfer::upload_pack(api, out, opts, pkg.package_id, &items, total).await
                    }
                    transfer::UploadJob::One(i) => vec![
                        transfer::upload_file(
                            api,
                            out,
                            opts,
                            pkg.package_id,
                            &i.local,
                            &i.path,
                            total,
                        )
                        .await
                        .map_err(|e| (i.local.display().to_string(), e)),
                    ],
                }
            }
        })
        .buffer_unordered(opts.jobs)
        .flat_map(futures::stream::iter)
        .collect()
        .await;
    if let Some(t) = &total {
        out.remove(t);
    }
    finish(out, "uploaded", reports)
}

async fn download(
    api: &Api,
    out: &Out,
    opts: &TransferOptions,
    r: &Remote,
    local: &Path,
    recursive: bool,
) -> Result<()> {
    let pkg_name = r.need_package("cp")?;
    let pkg = api.package(&r.bucket, pkg_name).await?;
    let jobs: Vec<(Object, PathBuf)> = if recursive {
        let prefix = dir_prefix(&r.path);
        let objects = list_all(api, pkg.package_id, &prefix).await?;
        if objects.is_empty() {
            return Err(Error::not_found(format!("objects under {r}")));
        }
        let mut jobs = Vec::with_capacity(objects.len());
        for o in objects {
            let rel = o.path[prefix.len()..].to_owned();
            jobs.push((o, transfer::local_target(local, &rel)?));
        }
        jobs
    } else {
        if r.path.is_empty() || r.path.ends_with('/') {
            return Err(Error::usage(format!("{r} names no object (use -r)")));
        }
        let o = api
            .object_at(pkg.package_id, &r.path)
            .await?
            .ok_or_else(|| Error::not_found(format!("object {r}")))?;
        let dest = if local.is_dir() || local.to_string_lossy().ends_with('/') {
            local.join(basename(&o.path))
        } else {
            local.to_path_buf()
        };
        vec![(o, dest)]
    };
    let many = jobs.len() > 1;
    let total_bytes: u64 = jobs.iter().map(|(o, _)| o.size()).sum();
    let total =
        many.then(|| Arc::new(out.bytes_bar(total_bytes, &format!("{} files", jobs.len()))));
    let reports = futures::stream::iter(jobs)
        .map(|(o, dest)| {
            let total = total.clone();
            async move {
                transfer::download_object(api, out, &o, &dest, total)
                    .await
                    .map_err(|e| (o.path.clone(), e))
            }
        })
        .buffer_unordered(opts.jobs)
        .collect::<Vec<_>>()
        .await;
    if let Some(t) = &total {
        out.remove(t);
    }
    finish(out, "downloaded", reports)
}

async fn clone(api: &Api, out: &Out, a: &Remote, b: &Remote, recursive: bool) -> Result<()> {
    let src_pkg = api.package(&a.bucket, a.need_package("cp")?).await?;
    let dst_pkg = api.package(&b.bucket, b.need_package("cp")?).await?;
    let pairs = remote_pairs(api, a, b, src_pkg.package_id, recursive).await?;
    let mut reports = Vec::with_capacity(pairs.len());
    for chunk in pairs.chunks(BATCH) {
        let clonings: Vec<Value> = chunk
            .iter()
            .map(|(o, dest)| {
                json!({ "objectID": o.object_id, "newPath": dest, "newPackageID": dst_pkg.package_id })
            })
            .collect();
        #[derive(Deserialize)]
        struct D {
            objects: Vec<Option<Object>>,
        }
        let d: D = api
            .post("object/clone", &json!({ "clonings": clonings }))
            .await?;
        for ((o, dest), got) in chunk.iter().zip(d.objects) {
            reports.push(match got {
                Some(n) => Ok(FileReport {
                    path: dest.clone(),
                    bytes: n.size(),
                    object_id: Some(n.object_id),
                    ..Default::default()
                }),
                None => Err((
                    o.path.clone(),
                    Error::Api {
                        endpoint: "object/clone".into(),
                        status: 409,
                        code: "OperationFailed".into(),
                        message: format!("could not clone {} to {dest} (taken or invalid)", o.path),
                    },
                )),
            });
        }
    }
    finish(out, "copied", reports)
}

/// Source objects and their target paths for `cp`/`mv` between two remotes.
async fn remote_pairs(
    api: &Api,
    a: &Remote,
    b: &Remote,
    package_id: u64,
    recursive: bool,
) -> Result<Vec<(Object, String)>> {
    if recursive {
        let prefix = dir_prefix(&a.path);
        let objects = list_all(api, package_id, &prefix).await?;
        if objects.is_empty() {
            return Err(Error::not_found(format!("objects under {a}")));
        }
        Ok(objects
            .into_iter()
            .map(|o| {
                let dest = join(&b.path, &o.path[prefix.len()..]);
                (o, dest)
            })
            .collect())
    } else {
        if a.path.is_empty() || a.path.ends_with('/') {
            return Err(Error::usage(format!("{a} names no object (use -r)")));
        }
        let o = api
            .object_at(package_id, &a.path)
            .await?
            .ok_or_else(|| Error::not_found(format!("object {a}")))?;
        let dest = if b.path.is_empty() || b.path.ends_with('/') {
            format!("{}{}", b.path, basename(&o.path))
        } else {
            b.path.clone()
        };
        Ok(vec![(o, dest)])
    }
}

// ---------- rm and mv ----------

async fn rm(api: &Api, out: &Out, target: &str, recursive: bool) -> Result<()> {
    let r = Remote::parse(target)?;
    let pkg = api.package(&r.bucket, r.need_package("rm")?).await?;
    let mut deleted = 0usize;
    if recursive {
        let prefix = dir_prefix(&r.path);
        let mut token = String::new();
        loop {
            let page = api
                .list_page(pkg.package_id, &prefix, true, true, 1000, &token)
                .await?;
            let ids: Vec<u64> = page.objects.iter().map(|o| o.object_id).collect();
            if !ids.is_empty() {
                api.delete_objects(&ids).await?;
            }
            for o in &page.objects {
                out.json(&json!({ "deleted": o.path, "objectID": o.object_id }));
            }
            deleted += ids.len();
            if !page.is_truncated || page.next_continuation_token.is_empty() {
                break;
            }
            token = page.next_continuation_token;
        }
        if deleted == 0 {
            return Err(Error::not_found(format!("objects under {r}")));
        }
    } else {
        if r.path.is_empty() {
            return Err(Error::usage(format!("{r} names no object (use -r)")));
        }
        let o = api
            .object_at(pkg.package_id, &r.path)
            .await?
            .ok_or_else(|| Error::not_found(format!("object {r}")))?;
        api.delete_objects(&[o.object_id]).await?;
        out.json(&json!({ "deleted": o.path, "objectID": o.object_id }));
        deleted = 1;
    }
    out.text(&format!("deleted {deleted} objects"));
    Ok(())
}

async fn mv(api: &Api, out: &Out, src: &str, dst: &str, recursive: bool) -> Result<()> {
    let (Location::Remote(a), Location::Remote(b)) = (Location::parse(src)?, Location::parse(dst)?)
    else {
        return Err(Error::usage(
            "mv works inside JCS: both sides must be jcs://bucket/package/path",
        ));
    };
    let src_pkg = api.package(&a.bucket, a.need_package("mv")?).await?;
    let dst_pkg = api.package(&b.bucket, b.need_package("mv")?).await?;
    let pairs = remote_pairs(api, &a, &b, src_pkg.package_id, recursive).await?;
    let mut reports = Vec::with_capacity(pairs.len());
    for chunk in pairs.chunks(BATCH) {
        let movings: Vec<Value> = chunk
            .iter()
            .map(|(o, dest)| {
                json!({ "objectID": o.object_id, "packageID": dst_pkg.package_id, "path": dest })
            })
            .collect();
        #[derive(Deserialize)]
        struct D {
            successes: Vec<u64>,
        }
        let d: D = api
            .post("object/move", &json!({ "movings": movings }))
            .await?;
        let ok: std::collections::HashSet<u64> = d.successes.into_iter().collect();
        for (o, dest) in chunk {
            reports.push(if ok.contains(&o.object_id) {
                Ok(FileReport {
                    path: dest.clone(),
                    bytes: o.size(),
                    object_id: Some(o.object_id),
                    ..Default::default()
                })
            } else {
                Err((
                    o.path.clone(),
                    Error::Api {
                        endpoint: "object/move".into(),
                        status: 409,
                        code: "OperationFailed".into(),
                        message: format!("could not move {} to {dest} (taken or invalid)", o.path),
                    },
                ))
            });
        }
    }
    finish(out, "moved", reports)
}

// ---------- user spaces ----------

/// Read a JSON or TOML (by extension) file into a JSON value.
fn read_spec(path: &Path) -> Result<Value> {
    let is_toml = path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("toml"));
    let value: Value = if is_toml {
        figment::Figment::from(
            <figment::providers::Toml as figment::providers::Format>::file_exact(path),
        )
        .extract()
        .map_err(|e| Error::LoadConfig {
            path: path.display().to_string(),
            message: e.to_string(),
        })?
    } else {
        let text = std::fs::read(path).map_err(|e| Error::io("reading", path, e))?;
        serde_json::from_slice(&text).map_err(|e| Error::LoadConfig {
            path: path.display().to_string(),
            message: e.to_string(),
        })?
    };
    expect_object(value, &path.display().to_string())
}

/// Take the table `key` out of `body` (empty when absent or not a table).
fn take_table(body: &mut Map<String, Value>, key: &str) -> Map<String, Value> {
    match body.remove(key) {
        Some(Value::Object(m)) => m,
        _ => Map::new(),
    }
}

/// The request body from `--file` and the flags (flags win).
fn space_body(s: &SpaceSpecArgs) -> Result<Map<String, Value>> {
    let mut body = match &s.file {
        Some(f) => match read_spec(f)? {
            Value::Object(m) => m,
            _ => Map::new(),
        },
        None => Map::new(),
    };
    if let Some(n) = &s.name {
        body.insert("name".into(), json!(n));
    }
    let had_storage = body.contains_key("storage");
    let mut storage = take_table(&mut body, "storage");
    let storage_fields = [
        ("type", &s.storage_type),
        ("path", &s.path),
        ("location", &s.location),
        ("endpoint", &s.endpoint),
        ("bucket", &s.bucket),
        ("region", &s.region),
    ];
    for (k, v) in storage_fields {
        if let Some(v) = v {
            storage.insert(k.into(), json!(v));
        }
    }
    let storage_type = storage.get("type").cloned();
    if had_storage || !storage.is_empty() {
        body.insert("storage".into(), Value::Object(storage));
    }
    let had_cred = body.contains_key("credential");
    let mut cred = take_table(&mut body, "credential");
    if let Some(k) = &s.access_key_id {
        cred.insert("accessKeyId".into(), json!(k));
    }
    if let Some(k) = &s.secret_access_key {
        cred.insert("secretAccessKey".into(), json!(k.expose()));
    }
    if let (None, Some(t)) = (cred.get("type"), storage_type) {
        cred.insert("type".into(), t);
    }
    if had_cred || !cred.is_empty() {
        body.insert("credential".into(), Value::Object(cred));
    }
    if let Some(m) = s.shard_store_max_size {
        body.insert("shardStore".into(), json!({ "maxSize": m }));
    }
    if let Some(w) = &s.working_dir {
        body.insert("workingDir".into(), json!(w));
    }
    Ok(body)
}

fn space_line(v: &Value) -> String {
    let s = &v["userSpace"];
    format!(
        "{}  {}  {}  revision {}",
        s["userSpaceID"],
        s["name"].as_str().unwrap_or(""),
        s["storage"],
        s["revision"]
    )
}

async fn space(api: &Api, out: &Out, c: SpaceCommand) -> Result<()> {
    match c {
        SpaceCommand::Create(s) => {
            let body = Value::Object(space_body(&s)?);
            let v: Value = api.post("userSpace/create", &body).await?;
            out.either(&v["userSpace"], &space_line(&v));
        }
        SpaceCommand::Get { id } => {
            let v: Value = api
                .get("userSpace/get", &[("userSpaceID", id.to_string())])
                .await?;
            out.either(&v["userSpace"], &space_line(&v));
        }
        SpaceCommand::Update { id, spec } => {
            let mut body = space_body(&spec)?;
            // update takes name and credential; fill the name from the current space.
            // update takes the name and the whole credential: keep the current name, and
            // the credential type of the storage (enough for Local spaces).
            let cur: Value = api
                .get("userSpace/get", &[("userSpaceID", id.to_string())])
                .await?;
            if !body.contains_key("name") {
                body.insert("name".into(), cur["userSpace"]["name"].clone());
            }
            let mut cred = take_table(&mut body, "credential");
            if !cred.contains_key("type") {
                cred.insert("type".into(), cur["userSpace"]["storage"]["type"].clone());
            }
            body.insert("credential".into(), Value::Object(cred));
            body.insert("userSpaceID".into(), json!(id));
            let v: Value = api.post("userSpace/update", &Value::Object(body)).await?;
            out.either(&v["userSpace"], &space_line(&v));
        }
        SpaceCommand::Rm { id } => {
            let _: Value = api
                .post("userSpace/delete", &json!({ "userSpaceID": id }))
                .await?;
            out.either(
                &json!({ "deleted": { "userSpaceID": id } }),
                &format!("deleted user space {id}"),
            );
        }
        SpaceCommand::Test(s) => {
            let body = Value::Object(space_body(&s)?);
            let _: Value = api.post("userSpace/test", &body).await?;
            out.either(&json!({ "ok": true }), "ok: the storage works");
        }
    }
    Ok(())
}

// ---------- sync tasks ----------

fn run_line(run: &Value) -> String {
    format!(
        "run {} {}: scanned {} copied {} skipped {} failed {} deleted {} bytes {}",
        run["runID"],
        run["result"].as_str().unwrap_or("?"),
        run["filesScanned"],
        run["filesCopied"],
        run["filesSkipped"],
        run["filesFailed"],
        run["filesDeleted"],
        human_size(
            run["bytesCopied"]
                .as_str()
                .and_then(|s| s.parse().ok())
                .unwrap_or(0)
        ),
    )
}

fn print_task(out: &Out, task: &Value) {
    if out.json {
        out.json(task);
        return;
    }
    let status = &task["status"];
    out.text(&format!(
        "task {}: {}",
        task["taskID"],
        status["state"].as_str().unwrap_or("?")
    ));
    if let Some(runs) = status["runs"].as_array() {
        for r in runs {
            out.text(&format!("  {}", run_line(r)));
        }
    }
    if let Some(errs) = status["lastErrors"].as_array() {
        for e in errs {
            out.text(&format!("  error: {}", e.as_str().unwrap_or("")));
        }
    }
}

async fn get_task(api: &Api, id: u64) -> Result<Value> {
    let v: Value = api
        .get("spaceSyncer/getTask", &[("taskID", id.to_string())])
        .await?;
    Ok(v["task"].clone())
}

async fn sync(api: &Api, out: &Out, c: SyncCommand) -> Result<()> {
    match c {
        SyncCommand::Create { file, wait } => {
            let body = read_spec(&file)?;
            let v: Value = api.post("spaceSyncer/createTask", &body).await?;
            if !wait {
                out.either(
                    &v["task"],
                    &format!("created sync task {}", v["task"]["taskID"]),
                );
                return Ok(());
            }
            let id = v["task"]["taskID"].as_u64().unwrap_or(0);
            let spinner = out.spinner(&format!("task {id} running"));
            let task = loop {
                let task: Value = api
                    .get(
                        "spaceSyncer/getTask",
                        &[("taskID", id.to_string()), ("waitMs", "20000".to_owned())],
                    )
                    .await?;
                let task = task["task"].clone();
                let state = task["status"]["state"].as_str().unwrap_or("");
                if state != "Pending" && state != "Running" {
                    break task;
                }
            };
            out.remove(&spinner);
            print_task(out, &task);
            let state = task["status"]["state"].as_str().unwrap_or("").to_owned();
            if state == "Failed" || state == "Cancelled" {
                return Err(super::error::Error::RunFailed { id, state });
            }
        }
        SyncCommand::Status {
            id,
            watch,
            interval,
        } => {
            let mut task = get_task(api, id).await?;
            if watch {
                let spinner = out.spinner(&format!("task {id}"));
                let period = std::time::Duration::from_secs_f64(interval.clamp(0.1, 3600.0));
                loop {
                    let state = task["status"]["state"].as_str().unwrap_or("").to_owned();
                    let last = task["status"]["runs"]
                        .as_array()
                        .and_then(|r| r.last())
                        .map(run_line)
                        .unwrap_or_else(|| "no run yet".into());
                    spinner.set_message(format!("task {id} {state}: {last}"));
                    if out.json {
                        out.json(&json!({ "taskID": id, "state": state, "lastRun": task["status"]["runs"].as_array().and_then(|r| r.last()).cloned() }));
                    }
                    if state != "Pending" && state != "Running" {
                        break;
                    }
                    tokio::time::sleep(period).await;
                    task = get_task(api, id).await?;
                }
                out.remove(&spinner);
            }
            print_task(out, &task);
        }
        SyncCommand::Cancel { id } => {
            let _: Value = api
                .post("spaceSyncer/cancelTask", &json!({ "taskID": id }))
                .await?;
            out.either(
                &json!({ "cancelled": { "taskID": id } }),
                &format!("cancelled sync task {id}"),
            );
        }
    }
    Ok(())
}
