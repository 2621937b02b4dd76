//! Integration tests: the real server on port 0 with a temporary data directory,
//! talked to over HTTP. One binary, to link once.

mod auth;
mod cli;
mod cli_client;
mod command;
mod crash;
mod dashboard;
mod data;
mod disk_full;
mod golden;
mod helpers;
mod idempotency_restart;
mod lock;
mod logs;
mod metrics;
mod openapi;
mod pause;
mod prometheus;
mod python_client;
mod python_helper;
mod ranks;
mod repair;
mod restarts;
mod runs;
mod runs_v1;
mod schemathesis;
mod server;
mod slurm;
mod stream;
mod stream_resume;
mod sweeps;
mod traces;
