//! runyard: a crash-safe orchestrator for machine-learning training runs.
//!
//! Runs are submitted over REST, given a GPU or CPU slot, trained in-process with
//! PyTorch through `tch`, and watched live over server-sent events. Two ideas carry
//! it:
//!
//! - **Pull, never push, progress.** A training thread only writes atomic
//!   [`train::ProgressCells`] that its run actor owns; the [`actors::Ticker`] samples
//!   them. The training loop never blocks, allocates, locks or does I/O to report.
//! - **Event sourcing.** Every state change is an [`domain::Event`] appended to a
//!   sled log and synced to stable storage before it is acknowledged; state is a pure
//!   fold over the log ([`domain::State`]); a restart replays it and resumes runs that
//!   were live from their last checkpoint, bit-identical to an uninterrupted run.
//!
//! # Layout
//!
//! Imports go one way, down this list's layers (`tests/layers.rs` fails on one that
//! goes up, and on any import cycle between files): [`domain`] and [`config`] at the
//! bottom; [`store`], [`train`], [`slurm`], [`auth`], [`telemetry`], [`instruments`]
//! on them; [`actors`] on those; [`http`] on the actors; [`startup`] and [`worker`],
//! which wire it all; [`cli`] on top, whose client commands see only the HTTP client.
//!
//! - [`domain`]: pure types and rules (run spec, events, state machine, slot ledger,
//!   a run's progress, a command's output streams); no I/O. Reading a spec sent as
//!   JSON, YAML or TOML is `domain::spec::parse`; the fold (`domain::state`) gives
//!   each aggregate its part of an event: a run its changes (`src/domain/state/run.rs`,
//!   with its states), the slot ledger its claims and releases, the state the
//!   journal's own events, and a sweep its trials and decisions
//!   (`src/domain/state/sweep.rs`, with the plan of what a sweep does next).
//!   `domain::sweep` holds hyperparameter sweeps' pure parts: the search space, the
//!   sweep spec's checks and the ASHA searcher (`sweep/searcher.rs`).
//! - [`store`]: the sled event log (synced after sled's flush, with a watermark of how
//!   far it reached; reopened after a failed write), its versioned record codec and the
//!   golden bytes that pin it (`store::codec`), snapshots and replay,
//!   export/import/verify, moving a bad tail or a damaged log aside (`serve --repair`),
//!   the data directory's lock (`store::lock`), and the sampled progress history.
//! - [`actors`]: the journal, dispatcher, slot, run, sweeper and ticker actors, their
//!   supervision (`actors::fault`: a panic in a handler caught and turned into a
//!   restart that re-derives state from the journal; fault points in debug builds),
//!   the tracer that turns the journal into runs' traces, and the executors behind
//!   one seam (`actors::executor`: launch, withdraw, restore, stop, resync): the
//!   local one (`actors::local`: the queue and the slots) and the Slurm one
//!   (`actors::slurm`: submits jobs, follows each by pulling its worker's facts and
//!   progress every tick, re-attaches after a restart).
//! - [`slurm`]: Slurm's commands (`sbatch`, `scontrol`, `squeue`, `scancel`), the
//!   files a server and its workers share, and the facts a worker answers with
//!   (`slurm::facts`, the wire format of `GET /api/v1/runs/{id}/facts`).
//! - [`worker`]: `runyard worker`, a server of its own on a compute node with a slot per
//!   rank of its node; `worker/rank.rs` is `runyard rank`, one rank on another node of
//!   the job, started by the worker's `srun`.
//! - [`auth`]: the tokens file (hashes, names, roles); `http::auth` is the middleware
//!   that asks for them.
//! - [`train`]: progress cells and flags, data loading (synthetic, CSV, `.npy`,
//!   safetensors) under data roots, models (MLP, CNN, TorchScript), optimizers with
//!   saveable state, learning-rate schedules, checkpoints, the training loop and its
//!   thread; the check of a run's data and model at submission (`train::check`, so a
//!   wrong path or shape is a `422` rather than a failed run); command runs
//!   (`train::command`: a child process per attempt, its signals, and ending the
//!   commands a killed server left running), their progress
//!   protocol v1 (`train::protocol`: the pipe's reader thread, into the same cells)
//!   and their rotated stdout/stderr files (`train::logfile`).
//! - [`http`]: the REST API (`http::runs`: one file per use case, `submit`, `list`,
//!   `view`, `control`, `artifacts`, and what they share in its `mod.rs`;
//!   `http::sweeps`: sweeps, their views and controls;
//!   `http::state`: what every handler reaches; `http::bulk`: large JSON answers
//!   that give the CPU back while they serialize; `http::views`: the views of runs
//!   nothing live changes, kept as the bytes sent), server-sent
//!   event streams (`http::stream`: the routes, filters and the frames' encoding;
//!   `stream/hub.rs`: one task per worker thread that feeds all of that worker's
//!   streams; `stream/behind.rs`: a stream catching up on history older than the
//!   journal's window; `stream/sub.rs`: one stream as the hub keeps it;
//!   `stream/slot.rs`: the one-chunk hand-over to a connection; `stream/stats.rs`:
//!   their shared counters), health checks,
//!   errors (with the problem+json media type), the
//!   dashboard page with its embedded assets (`http::dashboard`, `src/http/dashboard/`),
//!   and the OpenAPI document generated from them (`http::openapi`), with what the
//!   server checks written in (`openapi/checks.rs`: ranges, patterns, which fields a
//!   kind of run takes, and `x-stated-elsewhere`, the rules a schema cannot say).
//! - [`cli`]: the `runyard` command line.
//! - [`instruments`]: the Prometheus histograms and counters the actors and the HTTP
//!   layer update (`GET /metrics` adds what it reads at scrape time).
//! - [`config`], [`telemetry`], [`startup`]: layered configuration, logging and
//!   OpenTelemetry traces (`telemetry::run_spans`: a run's events as spans;
//!   `telemetry::traces`: the OTLP export pipeline; `http::traces`: request spans;
//!   `telemetry::work`: the actors' `tracing` spans, exported into the same pipeline
//!   through `tracing-opentelemetry` by the real binary's subscriber), and building
//!   the server.

#![warn(missing_docs)]

pub mod actors;
pub mod auth;
pub mod cli;
pub mod config;
pub mod domain;
pub mod http;
pub mod instruments;
pub mod slurm;
pub mod startup;
pub mod store;
pub mod telemetry;
pub mod train;
pub mod worker;
