//! `jcs admin scrub start|status`: the repair and scrub job of rep/ec objects
//! (docs/redundancy.md, "Repair and scrub"; docs/cli.md). gRPC to the coordinator like the
//! other admin commands; the leader runs the job.

use std::time::Duration;

use clap::Subcommand;
use proto::coordinator as pb;
use serde_json::Value;

use crate::admin::Error;
use crate::user::output::Out;

/// How often `--wait` polls the job's state.
const WAIT_POLL: Duration = Duration::from_millis(500);

#[derive(Debug, Subcommand)]
pub enum ScrubCommand {
    /// Start a scrub run now (the leader coordinator picks it up within a second).
    Start {
        /// Only the objects of this package (absent = every rep/ec object).
        #[arg(long = "package", value_name = "ID", value_parser = clap::value_parser!(u64).range(1..))]
        package: Option<u64>,
        /// Re-hash every block on its agent (reads every byte) instead of checking
        /// presence and size.
        #[arg(long)]
        deep: bool,
        /// Show progress until the run ends; exit non-zero if any repair failed.
        #[arg(long)]
        wait: bool,
    },
    /// The job's state: the current (or last) run and recent repairs.
    Status {
        /// Repair-log entries to show (newest first, 1 to 1000).
        #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=1000))]
        recent: u32,
    },
}

/// The status as JSON: exactly what `GET /v1/admin/scrub/status` answers in `data`.
pub fn status_json(s: &pb::ScrubStatus) -> Value {
    serde_json::to_value(gateway::routes::admin::StatusJson::from(s.clone()))
        .expect("StatusJson is a plain struct with string keys")
}

fn counters(s: &pb::ScrubStatus) -> String {
    format!(
        "checked {}, damaged {}, repaired {}, failed {}, unavailable {}",
        s.objects_checked, s.damaged, s.repaired, s.failed, s.unavailable
    )
}

/// The status for people.
pub fn status_text(s: &pb::ScrubStatus) -> String {
    let mut lines = vec![format!(
        "{}{}{}: {}",
        if s.running { "running" } else { "idle" },
        if s.deep { " (deep)" } else { "" },
        if s.package_id > 0 {
            format!(" package {}", s.package_id)
        } else {
            String::new()
        },
        counters(s)
    )];
    lines.push(format!(
        "runs completed: {}; last finished: {}; queued repairs: {}",
        s.runs,
        if s.last_finished_ms > 0 {
            common::time::rfc3339_ms(s.last_finished_ms)
        } else {
            "never".to_owned()
        },
        s.queued
    ));
    if !s.last_error.is_empty() {
        lines.push(format!("last error: {}", s.last_error));
    }
    for j in &s.reencode {
        lines.push(format!(
            "re-encode package {} to {}: {}, {} of {} checked, reencoded {}, superseded {}, failed {}{}",
            j.package_id,
            j.policy_json,
            if j.running { "running" } else { "done" },
            j.checked,
            j.total,
            j.reencoded,
            j.superseded,
            j.failed,
            if j.last_error.is_empty() {
                String::new()
            } else {
                format!(" (last error: {})", j.last_error)
            }
        ));
    }
    if s.reencode_queued > 0 {
        lines.push(format!(
            "objects queued for re-encoding: {}",
            s.reencode_queued
        ));
    }
    for r in &s.recent {
        lines.push(format!(
            "{}  object {}  blocks {:?}  {:?} → {:?}  {}  ({})",
            common::time::rfc3339_ms(r.time_ms),
            r.object_id,
            r.blocks,
            r.from_spaces,
            r.to_spaces,
            r.result,
            r.reason
        ));
    }
    lines.join("\n")
}

pub(crate) async fn run(
    coordinator: &mut client::CoordinatorClient,
    command: ScrubCommand,
    out: &Out,
) -> Result<(), Error> {
    let rpc = |status: tonic::Status| Error::Coordinator {
        source: client::Error::from(status),
    };
    match command {
        ScrubCommand::Status { recent } => {
            let s = coordinator
                .get_scrub_status(pb::GetScrubStatusRequest { recent })
                .await
                .map_err(rpc)?
                .into_inner();
            out.either(&status_json(&s), &status_text(&s));
        }
        ScrubCommand::Start {
            package,
            deep,
            wait,
        } => {
            let before = coordinator
                .get_scrub_status(pb::GetScrubStatusRequest { recent: 1 })
                .await
                .map_err(rpc)?
                .into_inner()
                .runs;
            let s = coordinator
                .start_scrub(pb::StartScrubRequest {
                    package_id: package.unwrap_or(0),
                    deep,
                })
                .await
                .map_err(rpc)?
                .into_inner();
            if !wait {
                out.either(&status_json(&s), "scrub requested");
                return Ok(());
            }
            let spinner = out.spinner("scrub");
            let s = loop {
                tokio::time::sleep(WAIT_POLL).await;
                let s = coordinator
                    .get_scrub_status(pb::GetScrubStatusRequest { recent: 10 })
                    .await
                    .map_err(rpc)?
                    .into_inner();
                spinner.set_message(counters(&s));
                if !s.running && s.runs > before {
                    break s;
                }
            };
            out.remove(&spinner);
            out.either(&status_json(&s), &status_text(&s));
            if s.failed > 0 {
                return Err(Error::ScrubFailed {
                    failed: s.failed,
                    last_error: s.last_error,
                });
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Debug, Parser)]
    struct Args {
        #[command(subcommand)]
        command: ScrubCommand,
    }

    #[test]
    fn package_and_recent_must_be_positive() {
        for bad in [
            &["t", "start", "--package", "0"][..],
            &["t", "status", "--recent", "0"],
            &["t", "status", "--recent", "1001"],
        ] {
            assert!(Args::try_parse_from(bad).is_err(), "{bad:?}");
        }
        let ok = Args::try_parse_from(["t", "start", "--package", "1"]).unwrap();
        assert!(matches!(
            ok.command,
            ScrubCommand::Start {
                package: Some(1),
                ..
            }
        ));
    }

    #[test]
    fn status_json_is_the_gateway_answer() {
        let s = pb::ScrubStatus {
            runs: 2,
            last_finished_ms: 1_750_753_888_514,
            recent: vec![pb::RepairLogEntry {
                object_id: 7,
                time_ms: 1_750_753_888_514,
                ..Default::default()
            }],
            ..Default::default()
        };
        let v = status_json(&s);
        assert_eq!(v["runs"], 2);
        // Absent times are empty strings, as docs/api.md says.
        assert_eq!(v["startTime"], "");
        assert_eq!(v["lastFinishedTime"], "2025-06-24T08:31:28.514Z");
        assert_eq!(v["recent"][0]["objectID"], 7);
        assert_eq!(v["recent"][0]["time"], "2025-06-24T08:31:28.514Z");
    }
}
