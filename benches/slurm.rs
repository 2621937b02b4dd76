//! What following a run on Slurm costs, on the one-node cluster of
//! `scripts/setup-slurm.sh`. The server runs in this process with the Slurm executor
//! over a temporary shared directory, with this build's `runyard` as the worker and
//! the default tick (`train.tick_ms`, 200 ms). The runs are command runs that report
//! progress at once and then wait for a gate file, so what is timed is the
//! orchestration, not a training loop.
//!
//! - `slurm_submit_to_first_progress_ms`: median time from `POST /runs` to the run's
//!   first progress sample in `GET /runs/{id}` (sbatch, Slurm's scheduling, the worker
//!   starting and registering, the first pull), over 5 runs.
//!   `local_submit_to_first_progress_ms` is the same run on a local slot, measured in
//!   the same bench: the baseline.
//! - `slurm_pull_us`: mean round trip of one pull from a worker with nothing new
//!   (`GET /runs/{id}/facts`), what the server pays per followed run per tick.
//! - `slurm_follow_cpu_pct_per_run`: the server process's CPU time while it follows
//!   8 idle jobs, less its CPU time following none, per job, in % of one core over
//!   10 s windows.
//!
//! Without a Slurm cluster it says so and reports nothing. Without `--bench` (`cargo
//! test --benches`) one run is followed through, quickly.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

const TIMEOUT: Duration = Duration::from_secs(180);

fn main() {
    let mode = common::mode();
    if mode == common::Mode::List {
        return;
    }
    let up = std::process::Command::new("sinfo")
        .args(["--noheader", "--format=%a"])
        .output()
        .is_ok_and(|o| o.status.success() && String::from_utf8_lossy(&o.stdout).contains("up"));
    if !up {
        println!("slurm bench: SKIPPED: no Slurm cluster answers `sinfo` (make slurm-up)");
        return;
    }
    let bench = mode == common::Mode::Bench;
    let mut figures = if bench {
        common::Figures::echoed(2)
    } else {
        common::Figures::quiet()
    };
    actix_web::rt::System::new().block_on(run(bench, &mut figures));
    if bench {
        figures.write("slurm");
    }
}

fn gated(name: &str, gate: &Path, executor: &str) -> Value {
    let script = r#"printf '{"epoch":1,"epochs":1,"batch":1,"batches":10,"samples":10,"loss":0.5}\n' >&3
while [ ! -e "$GATE" ]; do sleep 0.05; done"#;
    json!({
        "name": name,
        "kind": "command",
        "executor": executor,
        "argv": ["sh", "-c", script],
        "env": {"GATE": gate.display().to_string()},
        "grace": "1s",
    })
}

async fn run(bench: bool, figures: &mut common::Figures) {
    runyard::telemetry::init("warn");
    let dir = tempfile::tempdir().expect("temp dir");
    let shared = dir.path().join("shared");
    let mut config = runyard::config::Config::defaults();
    config.server.bind = "127.0.0.1:0".parse().expect("address");
    config.server.data_dir = dir.path().join("data");
    config.runs.allow_commands = true;
    config.executors.slurm.enabled = true;
    config.executors.slurm.shared_dir = Some(shared.clone());
    config.executors.slurm.worker_bin = Some(PathBuf::from(env!("CARGO_BIN_EXE_runyard")));
    config.executors.slurm.grace_secs = 2;
    let app = runyard::startup::Application::build(config)
        .await
        .expect("server builds");
    let base = format!("http://{}", app.address());
    let pid_cpu = process_cpu;
    actix_web::rt::spawn(app.run_until_stopped());
    let http = reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("client");
    let gate = dir.path().join("gate");

    let rounds = if bench { 5 } else { 1 };
    let mut slurm_ms = Vec::new();
    let mut local_ms = Vec::new();
    let mut ids = Vec::new();
    for round in 0..rounds {
        for (executor, out) in [("slurm", &mut slurm_ms), ("local", &mut local_ms)] {
            let started = Instant::now();
            let response = http
                .post(format!("{base}/api/v1/runs"))
                .json(&gated(&format!("{executor}-{round}"), &gate, executor))
                .send()
                .await
                .expect("submitted");
            assert_eq!(response.status(), 201, "{:?}", response.text().await);
            let body: Value = response.json().await.expect("run");
            let id = body["id"].as_str().expect("id").to_string();
            wait(&http, &base, &id, |r| r["progress"]["samples"] == 10).await;
            out.push(started.elapsed().as_secs_f64() * 1e3);
            ids.push((id, executor));
        }
        // The last round's runs stay open for the pull measurement; the others end
        // here, so local runs never wait for a slot.
        if round + 1 < rounds {
            open_and_finish(&http, &base, &gate, &ids).await;
            let _ = std::fs::remove_file(&gate);
            ids.clear();
        }
    }
    // One followed job: its worker, pulled directly.
    let (slurm_id, _) = ids.iter().find(|(_, e)| *e == "slurm").expect("slurm run");
    let run = get(&http, &base, slurm_id).await;
    let job_dir = PathBuf::from(run["slurm"]["dir"].as_str().expect("job dir"));
    let worker = run["slurm_live"]["worker"]
        .as_str()
        .expect("worker")
        .to_string();
    let secret = std::fs::read_to_string(job_dir.join("secret")).expect("secret");
    let synced = run["slurm"]["synced_seq"].as_u64().expect("synced");
    let pulls = if bench { 2000 } else { 20 };
    let started = Instant::now();
    for _ in 0..pulls {
        let response = http
            .get(format!(
                "http://{worker}/api/v1/runs/{slurm_id}/facts?after={synced}"
            ))
            .bearer_auth(secret.trim())
            .send()
            .await
            .expect("pulled");
        assert_eq!(response.status(), 200);
        let _ = response.bytes().await.expect("body");
    }
    let pull_us = started.elapsed().as_secs_f64() * 1e6 / f64::from(pulls);

    // Server CPU while following idle jobs, against following none.
    let mut follow_pct = f64::NAN;
    if bench {
        open_and_finish(&http, &base, &gate, &ids).await;
        let _ = std::fs::remove_file(&gate);
        let window = Duration::from_secs(10);
        let idle = cpu_over(window, pid_cpu).await;
        let k = 8;
        let mut followed = Vec::new();
        for i in 0..k {
            let id = submit(&http, &base, &gated(&format!("idle-{i}"), &gate, "slurm")).await;
            wait(&http, &base, &id, |r| r["progress"]["samples"] == 10).await;
            followed.push((id, "slurm"));
        }
        let busy = cpu_over(window, pid_cpu).await;
        follow_pct = (busy - idle) / window.as_secs_f64() * 100.0 / f64::from(k);
        ids.extend(followed);
    }
    open_and_finish(&http, &base, &gate, &ids).await;

    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (slurm, local) = (median(&mut slurm_ms), median(&mut local_ms));
    if bench {
        figures.put("slurm_submit_to_first_progress_ms", slurm, "ms");
        figures.put("local_submit_to_first_progress_ms", local, "ms");
        figures.put("slurm_pull_us", pull_us, "us");
        figures.put("slurm_follow_cpu_pct_per_run", follow_pct, "%");
    } else {
        println!(
            "slurm smoke: submit to first progress {slurm:.0} ms (local {local:.0} ms), pull {pull_us:.0} us"
        );
    }
}

/// Opens the gate and waits until every run has completed.
async fn open_and_finish(http: &reqwest::Client, base: &str, gate: &Path, ids: &[(String, &str)]) {
    std::fs::write(gate, b"").expect("gate");
    for (id, _) in ids {
        let run = wait(http, base, id, |r| {
            r["state"] == "completed" && (r["slurm"].is_null() || r["slurm"]["ended"].is_string())
        })
        .await;
        assert_eq!(run["state"], "completed");
    }
}

async fn submit(http: &reqwest::Client, base: &str, spec: &Value) -> String {
    let body: Value = http
        .post(format!("{base}/api/v1/runs"))
        .json(spec)
        .send()
        .await
        .expect("submitted")
        .json()
        .await
        .expect("run");
    body["id"].as_str().expect("id").to_string()
}

async fn get(http: &reqwest::Client, base: &str, id: &str) -> Value {
    http.get(format!("{base}/api/v1/runs/{id}"))
        .send()
        .await
        .expect("answered")
        .json()
        .await
        .expect("run")
}

async fn wait(
    http: &reqwest::Client,
    base: &str,
    id: &str,
    done: impl Fn(&Value) -> bool,
) -> Value {
    tokio::time::timeout(TIMEOUT, async {
        loop {
            let run = get(http, base, id).await;
            if done(&run) {
                return run;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    })
    .await
    .expect("run reached the state in time")
}

/// This process's CPU seconds (user + system).
fn process_cpu() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // utime and stime are fields 14 and 15, 11 and 12 after the command name.
    (ticks(11) + ticks(12)) / 100.0
}

/// CPU seconds this process spends over `window`.
async fn cpu_over(window: Duration, cpu: fn() -> f64) -> f64 {
    let before = cpu();
    tokio::time::sleep(window).await;
    cpu() - before
}
