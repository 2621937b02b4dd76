//! Learning-rate schedules, as a pure function of the optimizer step's index.
//!
//! Nothing here keeps state: a resumed run knows how many steps it has taken, so it
//! gets exactly the rates an uninterrupted run would have had, and a checkpoint does
//! not need to hold a scheduler.

use std::f64::consts::PI;

use crate::domain::spec::ScheduleSpec;

/// The learning rate for the optimizer step with 0-based index `step`.
///
/// A linear warm-up comes first: step `i < warmup_steps` gets
/// `base_lr * (i + 1) / warmup_steps`. After it, `Constant` gives `base_lr`; `Step`
/// multiplies `base_lr` by `gamma` once for every `step_epochs` whole epochs done
/// (counted from the start of the run); `Cosine` decays from `base_lr` to `min_lr`
/// over the steps after the warm-up, reaching `min_lr` at `total_steps` and staying
/// there.
pub fn learning_rate(
    schedule: &ScheduleSpec,
    base_lr: f64,
    step: u64,
    steps_per_epoch: u64,
    total_steps: u64,
) -> f64 {
    let warmup = match schedule {
        ScheduleSpec::Constant(c) => c.warmup_steps,
        ScheduleSpec::Step(s) => s.warmup_steps,
        ScheduleSpec::Cosine(c) => c.warmup_steps,
    };
    if step < warmup {
        return base_lr * (step + 1) as f64 / warmup as f64;
    }
    match schedule {
        ScheduleSpec::Constant(_) => base_lr,
        ScheduleSpec::Step(s) => {
            let epoch = step / steps_per_epoch.max(1);
            let decays = epoch / u64::from(s.step_epochs.max(1));
            base_lr * s.gamma.powf(decays as f64)
        }
        ScheduleSpec::Cosine(c) => {
            let span = total_steps.saturating_sub(warmup).max(1);
            let t = (step - warmup).min(span);
            let progress = t as f64 / span as f64;
            c.min_lr + (base_lr - c.min_lr) * (1.0 + (PI * progress).cos()) / 2.0
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::spec::{ConstantSchedule, CosineSchedule, StepSchedule};

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-12
    }

    fn constant(warmup_steps: u64) -> ScheduleSpec {
        ScheduleSpec::Constant(ConstantSchedule { warmup_steps })
    }

    fn step(warmup_steps: u64) -> ScheduleSpec {
        ScheduleSpec::Step(StepSchedule {
            step_epochs: 2,
            gamma: 0.5,
            warmup_steps,
        })
    }

    fn cosine(warmup_steps: u64) -> ScheduleSpec {
        ScheduleSpec::Cosine(CosineSchedule {
            min_lr: 0.1,
            warmup_steps,
        })
    }

    #[test]
    fn constant_is_the_base_rate() {
        for i in [0, 1, 99, 1_000_000] {
            assert_eq!(learning_rate(&constant(0), 0.3, i, 10, 100), 0.3);
        }
    }

    #[test]
    fn warm_up_ramps_linearly_to_the_base_rate() {
        let lrs: Vec<f64> = (0..6)
            .map(|i| learning_rate(&constant(4), 0.1, i, 10, 100))
            .collect();
        for (got, want) in lrs.iter().zip([0.025, 0.05, 0.075, 0.1, 0.1, 0.1]) {
            assert!(close(*got, want), "{lrs:?}");
        }
        // Every kind of schedule starts with the same ramp.
        for schedule in [step(4), cosine(4)] {
            assert!(close(learning_rate(&schedule, 1.0, 0, 10, 100), 0.25));
            assert!(close(learning_rate(&schedule, 1.0, 3, 10, 100), 1.0));
        }
    }

    #[test]
    fn step_decays_at_epoch_boundaries() {
        // 10 steps per epoch, halved every 2 epochs.
        let at = |i| learning_rate(&step(0), 1.0, i, 10, 100);
        assert_eq!(at(0), 1.0);
        assert_eq!(at(19), 1.0);
        assert_eq!(at(20), 0.5);
        assert_eq!(at(39), 0.5);
        assert_eq!(at(40), 0.25);
        assert_eq!(at(99), 0.0625);
        // The warm-up does not shift the epochs.
        assert!(close(learning_rate(&step(5), 1.0, 2, 10, 100), 0.6));
        assert_eq!(learning_rate(&step(5), 1.0, 20, 10, 100), 0.5);
        // A zero epoch length is treated as one step per epoch, not a panic.
        assert_eq!(learning_rate(&step(0), 1.0, 2, 0, 100), 0.5);
    }

    #[test]
    fn cosine_runs_from_base_to_min_over_the_steps_after_warm_up() {
        let at = |i| learning_rate(&cosine(0), 1.0, i, 10, 100);
        assert!(close(at(0), 1.0));
        assert!(close(at(50), 0.55));
        assert!(close(at(100), 0.1));
        assert!(close(at(1000), 0.1));
        assert!(at(99) > 0.1 && at(99) < 0.1 + 1e-3);
        assert!((1..=100).all(|i| at(i) < at(i - 1)));

        // With 10 warm-up steps the cosine starts at step 10 and spans 100 steps.
        let at = |i| learning_rate(&cosine(10), 1.0, i, 10, 110);
        assert!(close(at(9), 1.0));
        assert!(close(at(10), 1.0));
        assert!(close(at(60), 0.55));
        assert!(close(at(110), 0.1));
        // A run shorter than its warm-up still gets a finite rate.
        assert!(close(learning_rate(&cosine(10), 1.0, 12, 10, 5), 0.1));
    }
}
