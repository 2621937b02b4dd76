//! Large JSON answers (a page of 1,000 runs, 10,000 of a run's events) written so
//! they never hold a CPU for long.
//!
//! Serializing a thousand runs is milliseconds of work with no wait in it. On a
//! small machine, a thread the writers need (the journal's, a flush's, the one that
//! answers a submission) woken on the CPU doing that work can wait for it to finish
//! its time slice: measured on 2 cores, a client listing 1,000 runs in a loop
//! tripled the p99 of a submission, while the same load in pages of 100 cost
//! nothing. So the serializer offers the CPU back ([`std::thread::yield_now`])
//! after every [`SLICE`] of work: with no one waiting that is one system call;
//! with a writer waiting, it runs first.

use std::time::{Duration, Instant};

use serde::Serialize;

/// How long bulk serialization runs before it offers the CPU to a waiting thread.
pub const SLICE: Duration = Duration::from_micros(100);

/// `items` as one JSON array, yielding the thread after each [`SLICE`] of work.
pub fn json_array<T: Serialize>(
    items: impl ExactSizeIterator<Item = T>,
) -> Result<Vec<u8>, serde_json::Error> {
    // A run's view is about a kilobyte: one allocation for most pages.
    let mut body = Vec::with_capacity(items.len().saturating_mul(1024).min(16 << 20) + 2);
    body.push(b'[');
    let mut since = Instant::now();
    for (i, item) in items.enumerate() {
        if i > 0 {
            body.push(b',');
        }
        serde_json::to_writer(&mut body, &item)?;
        if since.elapsed() >= SLICE {
            std::thread::yield_now();
            since = Instant::now();
        }
    }
    body.push(b']');
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_array_is_what_serde_json_writes() {
        let items = vec![
            serde_json::json!({"a": 1}),
            serde_json::json!("two"),
            serde_json::json!([3]),
        ];
        let body = json_array(items.iter()).expect("serializes");
        assert_eq!(body, serde_json::to_vec(&items).expect("serializes"));
        let empty: Vec<u8> = json_array(Vec::<u8>::new().into_iter()).expect("serializes");
        assert_eq!(empty, b"[]");
    }
}
