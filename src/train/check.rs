//! The check of a run's data and model at submission, so a wrong path, column or
//! shape is a `422` now rather than a failed run later.

use tch::nn::VarStore;
use tch::Device;

use crate::domain::spec::ModelSpec;
use crate::domain::{RunSpec, SpecError};
use crate::train::data::{self, DataRoots};
use crate::train::model::Net;

/// Whether [`check_submission`] has anything to check: a training run whose data
/// the spec alone does not describe (files), or whose model is a TorchScript file.
/// Cheap, so a caller can skip moving a spec to a blocking thread for nothing.
pub fn needed(spec: &RunSpec) -> bool {
    let Ok((model, data)) = spec.training_parts() else {
        // A command run: no data of the server's to check.
        return false;
    };
    let script = matches!(model, ModelSpec::Torchscript(_));
    data.declared_samples().is_none() || script
}

/// Loads the data a spec names under `roots` and checks the rules that need its
/// shape; for a TorchScript model, also builds the module once on the CPU. Blocks
/// (file reads, libtorch): call it off the async threads. It exists so that a wrong
/// path, column or shape is a `422` at submission rather than a run that fails when
/// it starts; the spec comes back unchanged when it passes.
pub fn check_submission(spec: RunSpec, roots: &DataRoots) -> Result<RunSpec, SpecError> {
    if !needed(&spec) {
        return Ok(spec);
    }
    let (train, _) = data::load_run(&spec, roots)?;
    spec.validate_shape(&train.shape())?;
    let (model, _) = spec.training_parts()?;
    if matches!(model, ModelSpec::Torchscript(_)) {
        // Load the module once on the CPU: a wrong file or shape is a 422 now.
        let vs = VarStore::new(Device::Cpu);
        Net::build(
            &vs.root(),
            model,
            train.feature_count(),
            train.outputs,
            spec.seed,
            roots,
        )?;
    }
    Ok(spec)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(model: &str, data: &str) -> RunSpec {
        serde_json::from_str(&format!(
            r#"{{"name":"c","model":{model},"data":{data},"epochs":1,"batch_size":10,"seed":1}}"#
        ))
        .expect("spec parses")
    }

    const MLP: &str = r#"{"kind":"mlp","hidden":[8]}"#;
    const SCRIPT: &str = r#"{"kind":"torchscript","path":"models/missing.pt"}"#;
    const SYNTHETIC: &str =
        r#"{"kind":"synthetic","samples":100,"features":4,"classes":2,"seed":7}"#;
    const CSV: &str = r#"{"kind":"csv","path":"missing.csv"}"#;

    #[test]
    fn only_files_and_torchscript_modules_are_checked() {
        let command: RunSpec =
            serde_json::from_str(r#"{"name":"py","kind":"command","argv":["true"]}"#)
                .expect("command spec parses");
        assert!(!needed(&command));
        assert!(!needed(&spec(MLP, SYNTHETIC)));
        assert!(needed(&spec(MLP, CSV)));
        assert!(needed(&spec(SCRIPT, SYNTHETIC)));
        let unchecked = spec(MLP, SYNTHETIC);
        let roots = DataRoots::new(Vec::<std::path::PathBuf>::new());
        let back = check_submission(unchecked.clone(), &roots).expect("nothing to check");
        assert_eq!(back.canonical_json(), unchecked.canonical_json());
    }

    #[test]
    fn data_that_cannot_be_read_names_its_field() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let roots = DataRoots::new(vec![dir.path().to_path_buf()]);
        let error = check_submission(spec(MLP, CSV), &roots).expect_err("no such file");
        assert_eq!(error.field, "data.path", "{error}");
    }
}
