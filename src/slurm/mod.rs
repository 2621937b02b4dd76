//! The Slurm executor's parts that are not actors: Slurm's commands
//! ([`cli`]), the files a server and its workers share ([`files`]) and the worker
//! itself ([`worker`], `runyard worker`). The actor that submits and follows jobs is
//! [`crate::actors::slurm`].

pub mod cli;
pub mod files;
pub mod worker;
