//! The Slurm executor's parts that are not actors: Slurm's commands
//! ([`cli`]), the files a server and its workers share ([`files`]) and the facts a
//! worker answers its server with ([`facts`]). The actor that submits and follows
//! jobs is [`crate::actors::slurm`]; the worker itself (`runyard worker`) is
//! [`crate::worker`].

pub mod cli;
pub mod facts;
pub mod files;
