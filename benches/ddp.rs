//! Data-parallel command runs: how long runyard takes from a submit to every rank of a
//! two-rank `torch.distributed` run being up, against `torchrun` starting the same
//! script on the same machine, and what two ranks train per second against one.
//!
//! The script is `examples/ddp/train_ddp.py` (DDP, gloo, CPU, the digits data), with
//! the torch of `target/bench-venv` (`scripts/setup-torch.sh`, which `make bench` and
//! `make test` run). With `--ready-dir D --exit-when-ready` each rank writes
//! `D/ready-RANK` once `init_process_group` and a barrier returned, and leaves.
//!
//! - `ddp_submit_to_all_ranks_running_ms`: from `POST /api/v1/runs` of a two-slot
//!   command run to both ready files existing (median of the rounds).
//! - `torchrun_start_to_all_ranks_running_ms`: from starting
//!   `python -m torch.distributed.run --standalone --nproc-per-node 2` to both ready
//!   files existing (median), the rounds alternating with runyard's.
//! - `ddp_submit_vs_torchrun_start_ratio`: the first over the second (issue 16's
//!   target: at most 1.1).
//! - `ddp_2rank_samples_per_s`, `ddp_1rank_samples_per_s`: the training samples per
//!   second (all ranks together, mean over the epochs) of a two-slot and a one-slot
//!   run of 6 epochs through runyard, as rank 0 prints them. On a 2-core machine two
//!   ranks share the cores with each other and with the server: informational.
//!
//! Without `--bench` (`cargo test --benches`) one round of each start runs and
//! nothing is written.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

const ROUNDS: usize = 7;
const TIMEOUT: Duration = Duration::from_secs(300);

fn main() {
    let mode = common::mode();
    if mode == common::Mode::List {
        return;
    }
    let bench = mode == common::Mode::Bench;
    let dir = tempfile::tempdir().expect("temp dir");
    let served = common::server::serve_with(&dir.path().join("data"), |c| {
        c.train.cpu_slots = 2;
    });
    let base = served.base.clone();
    let scratch = dir.path().to_path_buf();
    let figures = common::server::client_thread(move |http| {
        Box::pin(async move { measure(&http, &base, &scratch, bench).await })
    })
    .join()
    .expect("bench client");
    served.stop();
    if bench {
        figures.write("ddp");
    } else {
        println!("ddp bench: smoke run ok; no figures written (no --bench)");
    }
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn python() -> PathBuf {
    let python = common::target_dir().join("bench-venv/bin/python");
    assert!(
        python.exists(),
        "{} is missing: run `bash scripts/setup-torch.sh` (make bench does)",
        python.display()
    );
    std::path::absolute(python).expect("absolute")
}

/// The script and its data, then `args`.
fn script_args(args: &[&str]) -> Vec<String> {
    let digits = root().join("data/datasets/digits.csv.gz");
    assert!(
        digits.exists(),
        "{} is missing: run `make setup`",
        digits.display()
    );
    let mut all = vec![
        root()
            .join("examples/ddp/train_ddp.py")
            .to_string_lossy()
            .into_owned(),
        "--data".into(),
        digits.to_string_lossy().into_owned(),
    ];
    all.extend(args.iter().map(|a| a.to_string()));
    all
}

/// Waits until every `ready-RANK` file of `ranks` ranks is in `dir`.
async fn all_ready(dir: &Path, ranks: u32) {
    let deadline = Instant::now() + TIMEOUT;
    while !(0..ranks).all(|rank| dir.join(format!("ready-{rank}")).exists()) {
        assert!(
            Instant::now() < deadline,
            "ranks never came up in {}",
            dir.display()
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

async fn submit(http: &reqwest::Client, base: &str, spec: &Value) -> String {
    let answer = http
        .post(format!("{base}/api/v1/runs"))
        .json(spec)
        .send()
        .await
        .expect("submit");
    assert_eq!(answer.status(), 201, "submit");
    let view: Value = answer.json().await.expect("view");
    view["id"].as_str().expect("id").to_string()
}

/// Waits until run `id` has completed; any other end fails the bench.
async fn wait_completed(http: &reqwest::Client, base: &str, id: &str) {
    let run = common::server::wait_ended(http, base, id, TIMEOUT).await;
    assert_eq!(run["state"], "completed", "run {id} ended: {run}");
}

fn command_spec(name: &str, slots: u32, args: &[&str]) -> Value {
    let mut argv = vec![python().to_string_lossy().into_owned()];
    argv.extend(script_args(args));
    json!({"name": name, "kind": "command", "slots": slots, "argv": argv})
}

/// One start through runyard: submit to every rank up, in ms.
async fn runyard_start(http: &reqwest::Client, base: &str, ready: &Path) -> f64 {
    let dir = ready.to_string_lossy().into_owned();
    let spec = command_spec("ddp-start", 2, &["--ready-dir", &dir, "--exit-when-ready"]);
    let started = Instant::now();
    let id = submit(http, base, &spec).await;
    all_ready(ready, 2).await;
    let ms = started.elapsed().as_secs_f64() * 1e3;
    wait_completed(http, base, &id).await;
    ms
}

/// One start through torchrun: its start to every rank up, in ms.
async fn torchrun_start(ready: &Path) -> f64 {
    let dir = ready.to_string_lossy().into_owned();
    let mut command = Command::new(python());
    command
        .args([
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc-per-node",
            "2",
        ])
        .args(script_args(&["--ready-dir", &dir, "--exit-when-ready"]))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let started = Instant::now();
    let mut child = command.spawn().expect("torchrun starts");
    all_ready(ready, 2).await;
    let ms = started.elapsed().as_secs_f64() * 1e3;
    let status = tokio::task::spawn_blocking(move || child.wait())
        .await
        .expect("join")
        .expect("torchrun ends");
    assert!(status.success(), "torchrun: {status}");
    ms
}

/// The `samples_per_s` rank 0 printed for a run of `slots` slots.
async fn throughput(http: &reqwest::Client, base: &str, slots: u32) -> f64 {
    let spec = command_spec("ddp-throughput", slots, &["--epochs", "6"]);
    let id = submit(http, base, &spec).await;
    wait_completed(http, base, &id).await;
    let text = http
        .get(format!("{base}/api/v1/runs/{id}/logs?tail=10000"))
        .send()
        .await
        .expect("logs")
        .text()
        .await
        .expect("text");
    text.lines()
        .rev()
        .find_map(|l| l.strip_prefix("samples_per_s "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("rank 0 printed no samples_per_s:\n{text}"))
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

async fn measure(
    http: &reqwest::Client,
    base: &str,
    scratch: &Path,
    bench: bool,
) -> common::Figures {
    common::server::wait_ready(http, base).await;
    let rounds = if bench { ROUNDS } else { 1 };
    let mut figures = common::Figures::echoed(2);
    // One start of each first, unmeasured: the page cache holds torch afterwards.
    let (mut ours, mut theirs) = (Vec::new(), Vec::new());
    for round in 0..=rounds {
        let dir = |who: &str| {
            let dir = scratch.join(format!("{who}-{round}"));
            std::fs::create_dir_all(&dir).expect("ready dir");
            dir
        };
        // Alternating which goes first, so neither always follows the other.
        let (a, b) = if round % 2 == 0 {
            let a = runyard_start(http, base, &dir("runyard")).await;
            (a, torchrun_start(&dir("torchrun")).await)
        } else {
            let b = torchrun_start(&dir("torchrun")).await;
            (runyard_start(http, base, &dir("runyard")).await, b)
        };
        if round > 0 {
            ours.push(a);
            theirs.push(b);
        }
    }
    if !bench {
        return figures;
    }
    let (ours, theirs) = (median(ours), median(theirs));
    figures.put("ddp_submit_to_all_ranks_running_ms", ours, "ms");
    figures.put("torchrun_start_to_all_ranks_running_ms", theirs, "ms");
    figures.put("ddp_submit_vs_torchrun_start_ratio", ours / theirs, "x");
    figures.put(
        "ddp_2rank_samples_per_s",
        throughput(http, base, 2).await,
        "samples/s",
    );
    figures.put(
        "ddp_1rank_samples_per_s",
        throughput(http, base, 1).await,
        "samples/s",
    );
    figures
}
