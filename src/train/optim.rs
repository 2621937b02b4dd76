//! Optimizers whose whole state can be written into a checkpoint.
//!
//! A run that is paused or killed and then resumed must end with the same weights, bit
//! for bit, as one that never stopped, so a checkpoint has to hold the optimizer's state
//! as well as the model's. tch's optimizers wrap libtorch's C++ ones and do not expose
//! that state, so runyard implements SGD, Adam and AdamW itself over tch tensors, with
//! the update rules of PyTorch 2.x's single-tensor (for-loop) `torch.optim` code.
//!
//! tch's in-place arithmetic takes no `alpha`/`value` multiplier, so where PyTorch
//! writes `a.add_(b, alpha=s)` this module scales `b` first. The arithmetic is the same;
//! the last bit of a result can differ from PyTorch where its kernel fuses the
//! multiply and the add. Resuming is exact either way: it only needs this code to do
//! the same thing twice. (tch's in-place operations return a second handle to the
//! tensor they changed; the `let _ =` lines drop it.)

use std::collections::{HashMap, HashSet};

use tch::nn::VarStore;
use tch::{Kind, TchError, Tensor};

use crate::domain::spec::{AdamSpec, OptimizerSpec, SgdSpec};

/// Prefix of every entry [`Optimizer::state_tensors`] produces, so the optimizer's
/// entries can share a checkpoint with the model's weights.
pub const STATE_PREFIX: &str = "optim.";

/// Name of the entry holding the number of optimizer steps taken.
const STEP_ENTRY: &str = "optim.step";

/// Why saved optimizer state could not be restored.
#[derive(Debug, thiserror::Error)]
pub enum OptimError {
    /// An entry this optimizer needs is not in the saved state.
    #[error("optimizer state {name} is missing")]
    Missing {
        /// The entry's name, e.g. `optim.fc1.weight.exp_avg`.
        name: String,
    },
    /// An entry has a different shape from the buffer it restores.
    #[error("optimizer state {name} has shape {found:?}, expected {expected:?}")]
    Shape {
        /// The entry's name.
        name: String,
        /// The shape of this optimizer's buffer.
        expected: Vec<i64>,
        /// The shape of the saved entry.
        found: Vec<i64>,
    },
    /// An entry has a different element type from the buffer it restores; copying it
    /// would round the values and break exact resumption.
    #[error("optimizer state {name} holds {found:?} values, expected {expected:?}")]
    Kind {
        /// The entry's name.
        name: String,
        /// The element type of this optimizer's buffer.
        expected: Kind,
        /// The element type of the saved entry.
        found: Kind,
    },
    /// A step count is negative, or a parameter has more updates than the optimizer has
    /// taken steps.
    #[error("optimizer state {name} holds an impossible step count {value}")]
    Count {
        /// The entry's name.
        name: String,
        /// The value found.
        value: i64,
    },
    /// An `optim.` entry this optimizer does not have: the state was saved by another
    /// kind of optimizer or for another model.
    #[error("optimizer state {name} does not belong to this optimizer")]
    Unexpected {
        /// The entry's name.
        name: String,
    },
    /// libtorch refused an operation while restoring.
    #[error("torch: {0}")]
    Torch(#[from] TchError),
}

/// The update rule and its hyper-parameters; the learning rate comes with each step.
#[derive(Debug, Clone, Copy)]
enum Method {
    /// `torch.optim.SGD` with `dampening = 0`.
    Sgd {
        momentum: f64,
        nesterov: bool,
        weight_decay: f64,
    },
    /// `torch.optim.Adam` (`decoupled = false`) or `torch.optim.AdamW` (`true`), both
    /// with `amsgrad = false`.
    Adam {
        beta1: f64,
        beta2: f64,
        eps: f64,
        weight_decay: f64,
        decoupled: bool,
    },
}

/// Per-parameter buffers, allocated up front so that restoring can check shapes and
/// the training loop allocates nothing for them.
#[derive(Debug)]
enum Buffers {
    /// SGD's momentum buffer; `None` when momentum is 0.
    Sgd { momentum_buffer: Option<Tensor> },
    /// Adam's running first and second moments.
    Adam { exp_avg: Tensor, exp_avg_sq: Tensor },
}

impl Buffers {
    /// The buffers with the suffix of their checkpoint names.
    fn named(&self) -> Vec<(&'static str, &Tensor)> {
        match self {
            Buffers::Sgd { momentum_buffer } => momentum_buffer
                .iter()
                .map(|b| ("momentum_buffer", b))
                .collect(),
            Buffers::Adam {
                exp_avg,
                exp_avg_sq,
            } => vec![("exp_avg", exp_avg), ("exp_avg_sq", exp_avg_sq)],
        }
    }

    /// [`Buffers::named`], for writing.
    fn named_mut(&mut self) -> Vec<(&'static str, &mut Tensor)> {
        match self {
            Buffers::Sgd { momentum_buffer } => momentum_buffer
                .iter_mut()
                .map(|b| ("momentum_buffer", b))
                .collect(),
            Buffers::Adam {
                exp_avg,
                exp_avg_sq,
            } => vec![("exp_avg", exp_avg), ("exp_avg_sq", exp_avg_sq)],
        }
    }
}

/// One trainable variable and the optimizer's state for it.
#[derive(Debug)]
struct Param {
    /// The variable's name in the var store; checkpoint entries are named after it.
    name: String,
    /// A shallow copy of the variable: updates write through to the model.
    tensor: Tensor,
    /// Updates this parameter has had. Like PyTorch, a parameter without a gradient is
    /// skipped, so this can lag the optimizer's count. It sets Adam's bias correction
    /// and marks SGD's momentum buffer as started (PyTorch starts that buffer as a copy
    /// of the first gradient, not at zero).
    updates: i64,
    /// The optimizer's buffers for this parameter.
    buffers: Buffers,
}

/// SGD, Adam or AdamW over the trainable variables of a var store, with state that
/// can be saved and restored exactly.
#[derive(Debug)]
pub struct Optimizer {
    /// The update rule.
    method: Method,
    /// The trainable variables, sorted by name so the order never depends on hashing.
    params: Vec<Param>,
    /// Optimizer steps taken.
    steps: i64,
    /// A failure while zeroing gradients, reported by the next [`Optimizer::step`] so
    /// that a step is never taken on stale gradients.
    zero_grad_error: Option<TchError>,
}

impl Optimizer {
    /// An optimizer for every variable of `vs` that requires a gradient.
    pub fn new(spec: &OptimizerSpec, vs: &VarStore) -> Result<Self, TchError> {
        let method = match spec {
            OptimizerSpec::Sgd(SgdSpec {
                momentum,
                nesterov,
                weight_decay,
                ..
            }) => Method::Sgd {
                momentum: *momentum,
                nesterov: *nesterov,
                weight_decay: *weight_decay,
            },
            OptimizerSpec::Adam(adam) => adam_method(adam, false),
            OptimizerSpec::Adamw(adam) => adam_method(adam, true),
        };
        let mut variables: Vec<(String, Tensor)> = vs
            .variables()
            .into_iter()
            .filter(|(_, tensor)| tensor.requires_grad())
            .collect();
        variables.sort_by(|a, b| a.0.cmp(&b.0));
        let params = tch::no_grad(|| {
            variables
                .into_iter()
                .map(|(name, tensor)| {
                    let buffers = match method {
                        Method::Sgd { momentum, .. } => Buffers::Sgd {
                            momentum_buffer: if momentum != 0.0 {
                                Some(tensor.f_zeros_like()?)
                            } else {
                                None
                            },
                        },
                        Method::Adam { .. } => Buffers::Adam {
                            exp_avg: tensor.f_zeros_like()?,
                            exp_avg_sq: tensor.f_zeros_like()?,
                        },
                    };
                    Ok(Param {
                        name,
                        tensor,
                        updates: 0,
                        buffers,
                    })
                })
                .collect::<Result<Vec<_>, TchError>>()
        })?;
        Ok(Self {
            method,
            params,
            steps: 0,
            zero_grad_error: None,
        })
    }

    /// Zeroes every gradient (PyTorch's `zero_grad(set_to_none=False)`).
    pub fn zero_grad(&mut self) {
        for param in &self.params {
            let zeroed = param.tensor.f_grad().and_then(|mut grad| {
                if grad.defined() {
                    let _ = grad.f_detach_()?.f_zero_()?;
                }
                Ok(())
            });
            if let Err(err) = zeroed {
                self.zero_grad_error.get_or_insert(err);
            }
        }
    }

    /// Scales the gradients down when their global L2 norm is above `max_norm`, as
    /// `torch.nn.utils.clip_grad_norm_` does, and returns the norm before clipping.
    pub fn clip_grad_norm(&mut self, max_norm: f64) -> Result<f64, TchError> {
        tch::no_grad(|| {
            let mut grads = Vec::with_capacity(self.params.len());
            for param in &self.params {
                let grad = param.tensor.f_grad()?;
                if grad.defined() {
                    grads.push(grad);
                }
            }
            if grads.is_empty() {
                return Ok(0.0);
            }
            let norms = grads
                .iter()
                .map(Tensor::f_norm)
                .collect::<Result<Vec<_>, _>>()?;
            let total = Tensor::f_stack(&norms, 0)?.f_norm()?;
            // PyTorch computes `max_norm / (total + 1e-6)` as a reciprocal times a
            // scalar, clamps it at 1 and always multiplies; times 1 changes nothing.
            let mut coef = total.f_add_scalar(1e-6)?.f_reciprocal()?;
            let _ = coef.f_mul_scalar_(max_norm)?.f_clamp_max_(1.0)?;
            for grad in &mut grads {
                let _ = grad.f_mul_(&coef)?;
            }
            f64::try_from(&total)
        })
    }

    /// Takes one optimizer step with learning rate `lr` (the schedule's value for this
    /// step). Parameters without a gradient are left alone, as in PyTorch. After an
    /// error the state is partly updated and the run should not go on.
    pub fn step(&mut self, lr: f64) -> Result<(), TchError> {
        if let Some(err) = self.zero_grad_error.take() {
            return Err(err);
        }
        let method = self.method;
        tch::no_grad(|| {
            for param in &mut self.params {
                let grad = param.tensor.f_grad()?;
                if !grad.defined() {
                    continue;
                }
                param.updates += 1;
                match (method, &mut param.buffers) {
                    (
                        Method::Sgd {
                            momentum,
                            nesterov,
                            weight_decay,
                        },
                        Buffers::Sgd { momentum_buffer },
                    ) => sgd_update(
                        &mut param.tensor,
                        &grad,
                        momentum_buffer.as_mut().map(|b| (b, param.updates == 1)),
                        lr,
                        momentum,
                        nesterov,
                        weight_decay,
                    )?,
                    (
                        Method::Adam {
                            beta1,
                            beta2,
                            eps,
                            weight_decay,
                            decoupled,
                        },
                        Buffers::Adam {
                            exp_avg,
                            exp_avg_sq,
                        },
                    ) => {
                        let step = param.updates as f64;
                        let hyper = AdamStep {
                            lr,
                            beta1,
                            beta2,
                            eps,
                            weight_decay,
                            decoupled,
                            bias_correction1: 1.0 - beta1.powf(step),
                            bias_correction2: 1.0 - beta2.powf(step),
                        };
                        adam_update(&mut param.tensor, &grad, exp_avg, exp_avg_sq, &hyper)?
                    }
                    // `new` builds the buffers from the method, so this cannot happen.
                    _ => {
                        return Err(TchError::Kind(format!(
                            "optimizer buffers of {} do not match the update rule",
                            param.name
                        )))
                    }
                }
            }
            Ok(())
        })?;
        self.steps += 1;
        Ok(())
    }

    /// Optimizer steps taken.
    pub fn steps(&self) -> i64 {
        self.steps
    }

    /// Everything needed to resume exactly, as named tensors (shallow copies: they
    /// change with the next step): `optim.step`, and per parameter
    /// `optim.<name>.step` plus its buffers (`momentum_buffer`, or `exp_avg` and
    /// `exp_avg_sq`).
    pub fn state_tensors(&self) -> Vec<(String, Tensor)> {
        let mut named = vec![(STEP_ENTRY.to_string(), Tensor::from(self.steps))];
        for param in &self.params {
            named.push((
                param_entry(&param.name, "step"),
                Tensor::from(param.updates),
            ));
            for (suffix, buffer) in param.buffers.named() {
                named.push((param_entry(&param.name, suffix), buffer.shallow_clone()));
            }
        }
        named
    }

    /// Restores state saved by [`Optimizer::state_tensors`], copying it into this
    /// optimizer's buffers. Entries without the `optim.` prefix (the model's weights)
    /// are ignored. Everything is checked before anything is changed.
    pub fn load_state(&mut self, named: &HashMap<String, Tensor>) -> Result<(), OptimError> {
        let lookup = |name: &str| {
            named.get(name).ok_or_else(|| OptimError::Missing {
                name: name.to_string(),
            })
        };
        let mut expected: HashSet<String> = HashSet::new();
        let steps = read_count(STEP_ENTRY, lookup(STEP_ENTRY)?, i64::MAX)?;
        expected.insert(STEP_ENTRY.to_string());
        let mut updates = Vec::with_capacity(self.params.len());
        for param in &self.params {
            let entry = param_entry(&param.name, "step");
            updates.push(read_count(&entry, lookup(&entry)?, steps)?);
            expected.insert(entry);
            for (suffix, buffer) in param.buffers.named() {
                let entry = param_entry(&param.name, suffix);
                check_like(&entry, lookup(&entry)?, buffer)?;
                expected.insert(entry);
            }
        }
        if let Some(name) = named
            .keys()
            .filter(|name| name.starts_with(STATE_PREFIX) && !expected.contains(*name))
            .min()
        {
            return Err(OptimError::Unexpected { name: name.clone() });
        }
        tch::no_grad(|| {
            for (param, count) in self.params.iter_mut().zip(updates) {
                param.updates = count;
                for (suffix, buffer) in param.buffers.named_mut() {
                    buffer.f_copy_(lookup(&param_entry(&param.name, suffix))?)?;
                }
            }
            Ok::<(), OptimError>(())
        })?;
        self.steps = steps;
        Ok(())
    }
}

fn adam_method(adam: &AdamSpec, decoupled: bool) -> Method {
    Method::Adam {
        beta1: adam.betas[0],
        beta2: adam.betas[1],
        eps: adam.eps,
        weight_decay: adam.weight_decay,
        decoupled,
    }
}

/// Checkpoint name of a per-parameter entry.
fn param_entry(param: &str, suffix: &str) -> String {
    format!("{STATE_PREFIX}{param}.{suffix}")
}

/// Reads a saved step count: one integer between 0 and `max`.
fn read_count(name: &str, tensor: &Tensor, max: i64) -> Result<i64, OptimError> {
    if tensor.numel() != 1 {
        return Err(OptimError::Shape {
            name: name.to_string(),
            expected: Vec::new(),
            found: tensor.size(),
        });
    }
    let kind = tensor.f_kind()?;
    if kind != Kind::Int64 {
        return Err(OptimError::Kind {
            name: name.to_string(),
            expected: Kind::Int64,
            found: kind,
        });
    }
    let value = i64::try_from(tensor)?;
    if !(0..=max).contains(&value) {
        return Err(OptimError::Count {
            name: name.to_string(),
            value,
        });
    }
    Ok(value)
}

/// Checks that a saved buffer can be copied into `buffer` without loss.
fn check_like(name: &str, saved: &Tensor, buffer: &Tensor) -> Result<(), OptimError> {
    let (expected, found) = (buffer.size(), saved.size());
    if expected != found {
        return Err(OptimError::Shape {
            name: name.to_string(),
            expected,
            found,
        });
    }
    let (expected, found) = (buffer.f_kind()?, saved.f_kind()?);
    if expected != found {
        return Err(OptimError::Kind {
            name: name.to_string(),
            expected,
            found,
        });
    }
    Ok(())
}

/// `torch.optim.SGD`'s update of one parameter (`dampening = 0`). `momentum_buffer`
/// comes with whether this is the parameter's first update.
fn sgd_update(
    param: &mut Tensor,
    grad: &Tensor,
    momentum_buffer: Option<(&mut Tensor, bool)>,
    lr: f64,
    momentum: f64,
    nesterov: bool,
    weight_decay: f64,
) -> Result<(), TchError> {
    // grad + weight_decay * param, as a new tensor: PyTorch leaves `p.grad` alone.
    let decayed = if weight_decay != 0.0 {
        Some(param.f_mul_scalar(weight_decay)?.f_add_(grad)?)
    } else {
        None
    };
    let g = decayed.as_ref().unwrap_or(grad);
    let mut direction = None;
    if let Some((buffer, first)) = momentum_buffer {
        if first {
            buffer.f_copy_(g)?;
        } else {
            let _ = buffer.f_mul_scalar_(momentum)?.f_add_(g)?;
        }
        if nesterov {
            direction = Some(buffer.f_mul_scalar(momentum)?.f_add_(g)?);
        } else {
            // The buffer is state and must not be scaled in place.
            let _ = param.f_add_(&buffer.f_mul_scalar(-lr)?)?;
            return Ok(());
        }
    }
    // The step direction is a tensor of our own where there is one, scaled in place;
    // otherwise it is the gradient itself, which is left alone.
    let _ = match direction.or(decayed) {
        Some(mut owned) => param.f_add_(&owned.f_mul_scalar_(-lr)?)?,
        None => param.f_add_(&grad.f_mul_scalar(-lr)?)?,
    };
    Ok(())
}

/// The numbers one Adam update of one parameter needs.
struct AdamStep {
    lr: f64,
    beta1: f64,
    beta2: f64,
    eps: f64,
    weight_decay: f64,
    decoupled: bool,
    bias_correction1: f64,
    bias_correction2: f64,
}

/// `torch.optim.Adam`'s / `AdamW`'s update of one parameter (`amsgrad = false`).
fn adam_update(
    param: &mut Tensor,
    grad: &Tensor,
    exp_avg: &mut Tensor,
    exp_avg_sq: &mut Tensor,
    s: &AdamStep,
) -> Result<(), TchError> {
    let mut decayed = None;
    if s.weight_decay != 0.0 {
        if s.decoupled {
            let _ = param.f_mul_scalar_(1.0 - s.lr * s.weight_decay)?;
        } else {
            decayed = Some(param.f_mul_scalar(s.weight_decay)?.f_add_(grad)?);
        }
    }
    let grad = decayed.as_ref().unwrap_or(grad);
    let _ = exp_avg.f_lerp_(grad, 1.0 - s.beta1)?;
    // addcmul_(grad, grad, value) computes (value * grad) * grad; scaling the first
    // operand keeps that order.
    let _ = exp_avg_sq
        .f_mul_scalar_(s.beta2)?
        .f_addcmul_(&grad.f_mul_scalar(1.0 - s.beta2)?, grad)?;
    let mut denom = exp_avg_sq.f_sqrt()?;
    let _ = denom
        .f_div_scalar_(s.bias_correction2.sqrt())?
        .f_add_scalar_(s.eps)?;
    // addcdiv_(exp_avg, denom, value) computes (value * exp_avg) / denom on the CPU.
    let step_size = s.lr / s.bias_correction1;
    let _ = param.f_addcdiv_(&exp_avg.f_mul_scalar(-step_size)?, &denom)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;
    use tch::nn::{self, Module, OptimizerConfig};
    use tch::Device;

    const LR: f64 = 0.05;

    /// A two-layer network in `vs`, with weights drawn from a private generator (the
    /// global torch generator is shared with tests running in parallel).
    fn model(vs: &VarStore, seed: u64) -> nn::Sequential {
        let root = vs.root();
        let net = nn::seq()
            .add(nn::linear(&root / "fc1", 4, 8, Default::default()))
            .add_fn(|x| x.tanh())
            .add(nn::linear(&root / "fc2", 8, 3, Default::default()));
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut variables: Vec<_> = vs.variables().into_iter().collect();
        variables.sort_by(|a, b| a.0.cmp(&b.0));
        tch::no_grad(|| {
            for (_, mut var) in variables {
                var.copy_(&random(&mut rng, &var.size()));
            }
        });
        net
    }

    fn random(rng: &mut ChaCha8Rng, shape: &[i64]) -> Tensor {
        let n = shape.iter().product::<i64>() as usize;
        let values: Vec<f32> = (0..n).map(|_| rng.random_range(-1.0..1.0)).collect();
        Tensor::from_slice(&values).view(shape)
    }

    struct Data {
        xs: Tensor,
        ys: Tensor,
    }

    fn data() -> Data {
        let mut rng = ChaCha8Rng::seed_from_u64(99);
        Data {
            xs: random(&mut rng, &[32, 4]),
            ys: random(&mut rng, &[32, 3]),
        }
    }

    fn loss(net: &nn::Sequential, data: &Data) -> Tensor {
        net.forward(&data.xs)
            .mse_loss(&data.ys, tch::Reduction::Mean)
    }

    fn sgd_spec() -> OptimizerSpec {
        OptimizerSpec::Sgd(SgdSpec {
            lr: LR,
            momentum: 0.9,
            nesterov: true,
            weight_decay: 0.01,
        })
    }

    fn adam_spec() -> AdamSpec {
        AdamSpec {
            lr: LR,
            betas: [0.8, 0.95],
            eps: 1e-6,
            weight_decay: 0.05,
        }
    }

    fn specs() -> Vec<OptimizerSpec> {
        vec![
            sgd_spec(),
            OptimizerSpec::Sgd(SgdSpec {
                lr: LR,
                momentum: 0.5,
                nesterov: false,
                weight_decay: 0.0,
            }),
            OptimizerSpec::Adam(adam_spec()),
            OptimizerSpec::Adamw(adam_spec()),
        ]
    }

    /// tch's built-in (libtorch C++) optimizer configured like `spec`.
    fn builtin(spec: &OptimizerSpec, vs: &VarStore) -> nn::Optimizer {
        let built = match spec {
            OptimizerSpec::Sgd(s) => nn::Sgd {
                momentum: s.momentum,
                dampening: 0.0,
                wd: s.weight_decay,
                nesterov: s.nesterov,
            }
            .build(vs, s.lr),
            OptimizerSpec::Adam(a) => nn::Adam {
                beta1: a.betas[0],
                beta2: a.betas[1],
                wd: a.weight_decay,
                eps: a.eps,
                amsgrad: false,
            }
            .build(vs, a.lr),
            OptimizerSpec::Adamw(a) => nn::AdamW {
                beta1: a.betas[0],
                beta2: a.betas[1],
                wd: a.weight_decay,
                eps: a.eps,
                amsgrad: false,
            }
            .build(vs, a.lr),
        };
        built.expect("builtin optimizer")
    }

    fn max_abs_diff(a: &VarStore, b: &VarStore) -> f64 {
        let b = b.variables();
        a.variables()
            .iter()
            .map(|(name, t)| (t - &b[name]).abs().max().double_value(&[]))
            .fold(0.0, f64::max)
    }

    fn bit_identical(a: &VarStore, b: &VarStore) -> bool {
        let b = b.variables();
        a.variables().iter().all(|(name, t)| t.equal(&b[name]))
    }

    /// A learning rate that changes every step, as a schedule's does.
    fn lr_at(step: i64) -> f64 {
        LR * (1.0 + (step % 3) as f64) / 3.0
    }

    fn train(opt: &mut Optimizer, net: &nn::Sequential, data: &Data, steps: i64, clip: bool) {
        for _ in 0..steps {
            opt.zero_grad();
            loss(net, data).backward();
            if clip {
                opt.clip_grad_norm(0.5).expect("clip");
            }
            opt.step(lr_at(opt.steps())).expect("step");
        }
    }

    #[test]
    fn optimizer_can_move_to_the_training_thread() {
        fn assert_send<T: Send>() {}
        assert_send::<Optimizer>();
        assert_send::<OptimError>();
    }

    #[test]
    fn matches_libtorch_optimizers() {
        let data = data();
        for spec in specs() {
            let ours_vs = VarStore::new(Device::Cpu);
            let ours_net = model(&ours_vs, 1);
            let theirs_vs = VarStore::new(Device::Cpu);
            let theirs_net = model(&theirs_vs, 1);
            assert!(bit_identical(&ours_vs, &theirs_vs));

            let mut ours = Optimizer::new(&spec, &ours_vs).expect("optimizer");
            let mut theirs = builtin(&spec, &theirs_vs);
            for _ in 0..40 {
                ours.zero_grad();
                loss(&ours_net, &data).backward();
                ours.step(spec.lr()).expect("step");
                theirs.zero_grad();
                loss(&theirs_net, &data).backward();
                theirs.step();
            }
            assert_eq!(ours.steps(), 40);
            let diff = max_abs_diff(&ours_vs, &theirs_vs);
            eprintln!("{spec:?}: max |ours - libtorch| = {diff:e}");
            assert!(diff < 1e-5, "{spec:?}: max abs diff {diff}");
            let start = VarStore::new(Device::Cpu);
            model(&start, 1);
            assert!(
                max_abs_diff(&ours_vs, &start) > 1e-2,
                "{spec:?}: training moved the weights"
            );
        }
    }

    #[test]
    fn resuming_from_saved_state_is_bit_identical() {
        let data = data();
        let dir = tempfile::tempdir().expect("tempdir");
        for spec in specs() {
            let vs = VarStore::new(Device::Cpu);
            let net = model(&vs, 2);
            let mut opt = Optimizer::new(&spec, &vs).expect("optimizer");
            train(&mut opt, &net, &data, 7, true);

            // Through a file, as a checkpoint would go.
            let path = dir.path().join("state.pt");
            Tensor::save_multi(&opt.state_tensors(), &path).expect("save");
            let saved: HashMap<String, Tensor> = Tensor::load_multi(&path)
                .expect("load")
                .into_iter()
                .collect();

            let mut resumed_vs = VarStore::new(Device::Cpu);
            let resumed_net = model(&resumed_vs, 3);
            resumed_vs.copy(&vs).expect("copy weights");
            let mut resumed = Optimizer::new(&spec, &resumed_vs).expect("optimizer");
            resumed.load_state(&saved).expect("load state");
            assert_eq!(resumed.steps(), 7);

            let mut fresh_vs = VarStore::new(Device::Cpu);
            let fresh_net = model(&fresh_vs, 3);
            fresh_vs.copy(&vs).expect("copy weights");
            let mut fresh = Optimizer::new(&spec, &fresh_vs).expect("optimizer");

            train(&mut opt, &net, &data, 13, true);
            train(&mut resumed, &resumed_net, &data, 13, true);
            train(&mut fresh, &fresh_net, &data, 13, true);
            assert!(bit_identical(&vs, &resumed_vs), "{spec:?}");
            assert!(
                !bit_identical(&vs, &fresh_vs),
                "{spec:?}: without the state the run differs"
            );
        }
    }

    #[test]
    fn state_names_every_buffer() {
        let vs = VarStore::new(Device::Cpu);
        model(&vs, 1);
        let names = |spec: &OptimizerSpec| {
            let mut names: Vec<String> = Optimizer::new(spec, &vs)
                .expect("optimizer")
                .state_tensors()
                .into_iter()
                .map(|(name, _)| name)
                .collect();
            names.sort();
            names
        };
        let adam = names(&OptimizerSpec::Adam(AdamSpec::with_lr(0.1)));
        assert_eq!(adam.len(), 1 + 4 * 3);
        assert!(adam.contains(&"optim.fc1.weight.exp_avg_sq".to_string()));
        assert!(adam.contains(&"optim.fc2.bias.step".to_string()));
        assert!(adam.contains(&"optim.step".to_string()));
        assert_eq!(names(&sgd_spec()).len(), 1 + 4 * 2);
    }

    #[test]
    fn bad_state_is_refused_and_named() {
        let vs = VarStore::new(Device::Cpu);
        model(&vs, 1);
        let adam = OptimizerSpec::Adam(AdamSpec::with_lr(0.1));
        let state: HashMap<String, Tensor> = Optimizer::new(&adam, &vs)
            .expect("optimizer")
            .state_tensors()
            .into_iter()
            .collect();
        let mut target = Optimizer::new(&adam, &vs).expect("optimizer");

        let mut missing = state
            .iter()
            .map(|(k, v)| (k.clone(), v.copy()))
            .collect::<HashMap<_, _>>();
        missing.remove("optim.fc1.bias.exp_avg");
        let err = target.load_state(&missing).expect_err("missing");
        assert!(matches!(&err, OptimError::Missing { name } if name == "optim.fc1.bias.exp_avg"));
        assert_eq!(
            err.to_string(),
            "optimizer state optim.fc1.bias.exp_avg is missing"
        );

        let mut misshaped = state
            .iter()
            .map(|(k, v)| (k.clone(), v.copy()))
            .collect::<HashMap<_, _>>();
        misshaped.insert(
            "optim.fc2.weight.exp_avg_sq".into(),
            Tensor::zeros([3, 9], (Kind::Float, Device::Cpu)),
        );
        let err = target.load_state(&misshaped).expect_err("shape");
        assert!(
            matches!(&err, OptimError::Shape { name, found, .. } if name == "optim.fc2.weight.exp_avg_sq" && found == &[3, 9]),
            "{err}"
        );

        let mut negative = state
            .iter()
            .map(|(k, v)| (k.clone(), v.copy()))
            .collect::<HashMap<_, _>>();
        negative.insert("optim.step".into(), Tensor::from(-1i64));
        assert!(matches!(
            target.load_state(&negative),
            Err(OptimError::Count { .. })
        ));

        let sgd = Optimizer::new(&sgd_spec(), &vs).expect("optimizer");
        let mut sgd_state: HashMap<String, Tensor> = sgd.state_tensors().into_iter().collect();
        sgd_state.insert(
            "fc1.weight".into(),
            Tensor::zeros([1], (Kind::Float, Device::Cpu)),
        );
        let err = target
            .load_state(&sgd_state)
            .expect_err("sgd state into adam");
        assert!(matches!(err, OptimError::Missing { .. }), "{err}");
        let mut plain_sgd = Optimizer::new(
            &OptimizerSpec::Sgd(SgdSpec {
                lr: 0.1,
                momentum: 0.0,
                nesterov: false,
                weight_decay: 0.0,
            }),
            &vs,
        )
        .expect("optimizer");
        let err = plain_sgd
            .load_state(&state)
            .expect_err("adam state into sgd");
        assert!(matches!(err, OptimError::Unexpected { .. }), "{err}");
        // Non-optimizer entries (the model's weights) are ignored.
        plain_sgd
            .load_state(
                &sgd_state
                    .into_iter()
                    .filter(|(k, _)| !k.contains("momentum"))
                    .collect(),
            )
            .expect("plain");
    }

    #[test]
    fn clip_grad_norm_scales_above_the_limit_only() {
        let vs = VarStore::new(Device::Cpu);
        let a = vs.root().var("a", &[2], nn::Init::Const(1.0));
        let b = vs.root().var("b", &[1], nn::Init::Const(1.0));
        let mut opt = Optimizer::new(
            &OptimizerSpec::Sgd(SgdSpec {
                lr: 0.1,
                momentum: 0.0,
                nesterov: false,
                weight_decay: 0.0,
            }),
            &vs,
        )
        .expect("optimizer");
        let backward = |opt: &mut Optimizer| {
            opt.zero_grad();
            // Gradients [3, 4] and [12]: global norm 13.
            ((&a * Tensor::from_slice(&[3.0f32, 4.0])).sum(Kind::Float) + &b * 12.0)
                .sum(Kind::Float)
                .backward();
        };
        backward(&mut opt);
        let norm = opt.clip_grad_norm(100.0).expect("clip");
        assert!((norm - 13.0).abs() < 1e-5, "{norm}");
        assert_eq!(
            Vec::<f32>::try_from(a.grad()).expect("grad"),
            vec![3.0, 4.0]
        );

        backward(&mut opt);
        let norm = opt.clip_grad_norm(1.3).expect("clip");
        assert!((norm - 13.0).abs() < 1e-5, "{norm}");
        let ga = Vec::<f32>::try_from(a.grad()).expect("grad");
        let gb = Vec::<f32>::try_from(b.grad()).expect("grad");
        for (got, want) in ga.iter().chain(&gb).zip([0.3f32, 0.4, 1.2]) {
            assert!((got - want).abs() < 1e-5, "{got} vs {want}");
        }
        opt.step(0.1).expect("step");
        assert_eq!(opt.steps(), 1);
    }

    #[test]
    fn parameters_without_gradients_are_skipped() {
        let vs = VarStore::new(Device::Cpu);
        let used = vs.root().var("used", &[1], nn::Init::Const(1.0));
        let unused = vs.root().var("unused", &[1], nn::Init::Const(1.0));
        let mut opt =
            Optimizer::new(&OptimizerSpec::Adam(AdamSpec::with_lr(0.1)), &vs).expect("optimizer");
        opt.zero_grad();
        (&used * 2.0).sum(Kind::Float).backward();
        opt.step(0.1).expect("step");
        assert!(unused.equal(&Tensor::from_slice(&[1.0f32])));
        let state: HashMap<String, Tensor> = opt.state_tensors().into_iter().collect();
        assert_eq!(i64::try_from(&state["optim.used.step"]).expect("count"), 1);
        assert_eq!(
            i64::try_from(&state["optim.unused.step"]).expect("count"),
            0
        );
    }
}
