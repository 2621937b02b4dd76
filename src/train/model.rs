//! Models: an MLP and a small CNN built in, with dropout whose masks come from a
//! generator seeded by the run's seed and the step, not from torch's shared
//! generator, so concurrent runs do not disturb each other and a resumed run drops
//! the same units as an uninterrupted one; and TorchScript modules saved from
//! Python, whose parameters join the run's variables and are trained.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tch::nn::{self, ConvConfig};
use tch::{Device, Tensor};

use super::data::{DataError, DataRoots};
use crate::domain::spec::{Activation, CnnSpec, ModelSpec};

/// Whether the network is training (dropout on) or being evaluated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Training, at optimizer step `step` (seeds the dropout masks).
    Train {
        /// The 0-based optimizer step.
        step: u64,
    },
    /// Evaluation: dropout off.
    Eval,
}

/// Parameters of a TorchScript module are registered under this prefix.
const SCRIPT_PREFIX: &str = "script";

#[derive(Debug)]
enum Layer {
    Script(tch::TrainableCModule),
    Linear(nn::Linear),
    Conv(nn::Conv2D, i64),
    Activation(Activation),
    MaxPool(i64),
    Dropout(f64),
    Reshape(Vec<i64>),
    Flatten,
}

/// A network built from a model spec.
#[derive(Debug)]
pub struct Net {
    layers: Vec<Layer>,
    seed: u64,
    device: Device,
}

impl Net {
    /// Builds the network a spec describes under `root`, mapping `inputs` features to
    /// `outputs` values. `seed` seeds the dropout masks; `roots` is where a
    /// TorchScript file is looked up. A TorchScript module is checked on a zero input:
    /// it must map `[1, inputs]` to `[1, outputs]`.
    pub fn build(
        root: &nn::Path,
        spec: &ModelSpec,
        inputs: i64,
        outputs: i64,
        seed: u64,
        roots: &DataRoots,
    ) -> Result<Self, DataError> {
        let layers = match spec {
            ModelSpec::Mlp(mlp) => dense(
                root,
                inputs,
                &mlp.hidden,
                outputs,
                mlp.activation,
                mlp.dropout,
                Vec::new(),
            ),
            ModelSpec::Cnn(cnn) => convolutional(root, cnn, outputs),
            ModelSpec::Torchscript(script) => {
                vec![Layer::Script(load_script(
                    root,
                    &script.path,
                    inputs,
                    outputs,
                    roots,
                )?)]
            }
        };
        Ok(Self {
            layers,
            seed,
            device: root.device(),
        })
    }

    /// Runs the network forward.
    pub fn forward(&self, xs: &Tensor, mode: Mode) -> Result<Tensor, tch::TchError> {
        let mut x = xs.shallow_clone();
        let mut dropouts = 0u64;
        for layer in &self.layers {
            x = match layer {
                Layer::Script(module) => module.forward_ts(&[x])?,
                Layer::Linear(l) => x.f_linear(&l.ws, l.bs.as_ref())?,
                Layer::Conv(c, padding) => x.f_conv2d(
                    &c.ws,
                    c.bs.as_ref(),
                    [1, 1],
                    [*padding, *padding],
                    [1, 1],
                    1,
                )?,
                Layer::Activation(Activation::Relu) => x.f_relu()?,
                Layer::Activation(Activation::Tanh) => x.f_tanh()?,
                Layer::Activation(Activation::Gelu) => x.f_gelu("none")?,
                Layer::MaxPool(k) => x.f_max_pool2d([*k, *k], [*k, *k], [0, 0], [1, 1], false)?,
                Layer::Reshape(shape) => {
                    let mut full = vec![x.size()[0]];
                    full.extend(shape);
                    x.f_reshape(full)?
                }
                Layer::Flatten => x.f_flatten(1, -1)?,
                Layer::Dropout(p) => match mode {
                    Mode::Eval => x,
                    Mode::Train { step } => {
                        dropouts += 1;
                        let mask = self.mask(&x, *p, step, dropouts)?;
                        x.f_mul(&mask)?
                    }
                },
            };
        }
        Ok(x)
    }

    /// A keep-mask scaled by `1 / (1 - p)`, drawn from `(seed, step, layer)`.
    fn mask(&self, x: &Tensor, p: f64, step: u64, layer: u64) -> Result<Tensor, tch::TchError> {
        let mut rng = ChaCha8Rng::seed_from_u64(self.seed);
        rng.set_stream(step.wrapping_mul(64).wrapping_add(layer));
        let keep = (1.0 / (1.0 - p)) as f32;
        let n = x.numel();
        let values: Vec<f32> = (0..n)
            .map(|_| if rng.random::<f64>() < p { 0.0 } else { keep })
            .collect();
        Tensor::f_from_slice(&values)?
            .f_reshape(x.size())?
            .f_to_kind(x.kind())?
            .f_to_device(self.device)
    }
}

/// Loads a TorchScript module, registers its parameters under `root`, and checks
/// that it maps `[1, inputs]` to `[1, outputs]`.
fn load_script(
    root: &nn::Path,
    path: &str,
    inputs: i64,
    outputs: i64,
    roots: &DataRoots,
) -> Result<tch::TrainableCModule, DataError> {
    let path = roots.resolve("model.path", path)?;
    let shown = path.display();
    let module = tch::TrainableCModule::load(&path, root / SCRIPT_PREFIX).map_err(|e| {
        DataError::new(
            "model.path",
            format!("{shown}: not a TorchScript module: {e}"),
        )
    })?;
    let probe = Tensor::zeros([1, inputs], (tch::Kind::Float, root.device()));
    let out = tch::no_grad(|| module.forward_ts(&[probe])).map_err(|e| {
        let first = e.to_string();
        let first = first.lines().next().unwrap_or_default().to_string();
        DataError::new(
            "model.path",
            format!("{shown}: does not take [batch, {inputs}] inputs: {first}"),
        )
    })?;
    if out.size() != [1, outputs] {
        return Err(DataError::new(
            "model.path",
            format!(
                "{shown}: maps [1, {inputs}] to {:?}, the data needs [1, {outputs}]",
                out.size()
            ),
        ));
    }
    Ok(module)
}

fn activation_and_dropout(layers: &mut Vec<Layer>, activation: Activation, dropout: f64) {
    layers.push(Layer::Activation(activation));
    if dropout > 0.0 {
        layers.push(Layer::Dropout(dropout));
    }
}

fn dense(
    root: &nn::Path,
    inputs: i64,
    hidden: &[u32],
    outputs: i64,
    activation: Activation,
    dropout: f64,
    mut layers: Vec<Layer>,
) -> Vec<Layer> {
    let mut width = inputs;
    for (i, h) in hidden.iter().enumerate() {
        let h = i64::from(*h);
        layers.push(Layer::Linear(nn::linear(
            root / format!("layer{i}"),
            width,
            h,
            Default::default(),
        )));
        activation_and_dropout(&mut layers, activation, dropout);
        width = h;
    }
    layers.push(Layer::Linear(nn::linear(
        root / "out",
        width,
        outputs,
        Default::default(),
    )));
    layers
}

fn convolutional(root: &nn::Path, cnn: &CnnSpec, outputs: i64) -> Vec<Layer> {
    let [c, h, w] = cnn.input.map(i64::from);
    let mut layers = vec![Layer::Reshape(vec![c, h, w])];
    let mut channels = c;
    for (i, (out, k)) in cnn.channels.iter().zip(&cnn.kernel_sizes).enumerate() {
        let (out, k) = (i64::from(*out), i64::from(*k));
        let config = ConvConfig {
            padding: k / 2,
            ..Default::default()
        };
        layers.push(Layer::Conv(
            nn::conv2d(root / format!("conv{i}"), channels, out, k, config),
            k / 2,
        ));
        layers.push(Layer::Activation(cnn.activation));
        if cnn.pool > 1 {
            layers.push(Layer::MaxPool(i64::from(cnn.pool)));
        }
        channels = out;
    }
    layers.push(Layer::Flatten);
    if cnn.dropout > 0.0 {
        layers.push(Layer::Dropout(cnn.dropout));
    }
    let (oc, oh, ow) = cnn.conv_output();
    let flat = (oc * oh * ow) as i64;
    dense(
        root,
        flat,
        &cnn.hidden,
        outputs,
        cnn.activation,
        cnn.dropout,
        layers,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::spec::{MlpSpec, TorchscriptSpec};
    use tch::Kind;

    fn roots() -> DataRoots {
        DataRoots::new([std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")])
    }

    #[test]
    fn a_torchscript_module_is_loaded_with_trainable_parameters() {
        let vs = nn::VarStore::new(Device::Cpu);
        let spec = ModelSpec::Torchscript(TorchscriptSpec {
            path: "tiny_mlp.pt".into(),
        });
        let net = Net::build(&vs.root(), &spec, 16, 3, 0, &roots()).expect("loads");
        let trainable = vs.trainable_variables();
        assert_eq!(trainable.len(), 4, "two linear layers: weights and biases");
        let out = net
            .forward(
                &Tensor::ones([2, 16], (Kind::Float, Device::Cpu)),
                Mode::Train { step: 0 },
            )
            .expect("forward");
        assert_eq!(out.size(), [2, 3]);
        out.sum(Kind::Float).backward();
        assert!(
            trainable.iter().all(|t| t.grad().defined()),
            "gradients reach the module's parameters"
        );

        let vs = nn::VarStore::new(Device::Cpu);
        let err = Net::build(&vs.root(), &spec, 8, 3, 0, &roots()).expect_err("wrong inputs");
        assert_eq!(err.field, "model.path");
        let vs = nn::VarStore::new(Device::Cpu);
        let err = Net::build(&vs.root(), &spec, 16, 5, 0, &roots()).expect_err("wrong outputs");
        assert!(err.reason.contains("[1, 5]"), "{err}");
    }

    #[test]
    fn dropout_masks_depend_on_seed_and_step_only() {
        let vs = nn::VarStore::new(Device::Cpu);
        let spec = ModelSpec::Mlp(MlpSpec {
            hidden: vec![32],
            activation: Activation::Relu,
            dropout: 0.5,
        });
        let net = Net::build(&vs.root(), &spec, 8, 3, 7, &roots()).expect("net");
        let xs = Tensor::ones([4, 8], (Kind::Float, Device::Cpu));
        let a = net.forward(&xs, Mode::Train { step: 3 }).expect("a");
        let b = net.forward(&xs, Mode::Train { step: 3 }).expect("b");
        let c = net.forward(&xs, Mode::Train { step: 4 }).expect("c");
        assert!(a.equal(&b));
        assert!(!a.equal(&c));
        let e1 = net.forward(&xs, Mode::Eval).expect("eval");
        let e2 = net.forward(&xs, Mode::Eval).expect("eval");
        assert!(e1.equal(&e2));
    }

    #[test]
    fn a_cnn_maps_flat_images_to_outputs() {
        let vs = nn::VarStore::new(Device::Cpu);
        let spec = ModelSpec::Cnn(CnnSpec {
            input: [1, 8, 8],
            channels: vec![4, 8],
            kernel_sizes: vec![3, 3],
            pool: 2,
            hidden: vec![16],
            activation: Activation::Relu,
            dropout: 0.25,
        });
        let net = Net::build(&vs.root(), &spec, 64, 10, 1, &roots()).expect("net");
        let xs = Tensor::randn([5, 64], (Kind::Float, Device::Cpu));
        let out = net.forward(&xs, Mode::Train { step: 0 }).expect("forward");
        assert_eq!(out.size(), [5, 10]);
        let parameters: i64 = vs
            .trainable_variables()
            .iter()
            .map(|t| t.numel() as i64)
            .sum();
        let shape = crate::domain::spec::DataShape {
            samples: 5,
            features: 64,
            outputs: 10,
        };
        let run: crate::domain::RunSpec = serde_json::from_value(serde_json::json!({
            "name": "c", "model": serde_json::to_value(&spec).expect("json"),
            "data": {"kind": "synthetic", "samples": 10, "features": 64, "classes": 10},
            "epochs": 1, "batch_size": 2
        }))
        .expect("spec");
        assert_eq!(run.parameter_count(&shape), parameters as u64);
    }
}
