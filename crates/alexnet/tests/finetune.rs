//! Fine-tuning end to end: a run starts from a weights file (an alexnet-rs checkpoint of
//! another run, or a PyTorch `state_dict` for the `torchvision` preset), replaces the last
//! layer for a folder with other classes, trains only that layer, and resumes frozen.

use std::collections::HashMap;
use std::path::Path;

use alexnet::checkpoint::{TensorMap, load_tensors};
use alexnet::init::init_params;
use alexnet::{Architecture, Preset, RunConfig, Schedule, Silent, StartWeights, Trainer};

mod common;
use common::backend;

fn folder_config(preset: Preset, data: &Path, runs: &Path, name: &str) -> RunConfig {
    let mut config = RunConfig::for_preset(preset);
    config.name = name.into();
    config.output.runs_dir = runs.to_path_buf();
    config.data.train = Some(data.to_path_buf());
    config.data.val_fraction = 0.25;
    config.optim.epochs = 1;
    config.optim.batch_size = 4;
    config.optim.eval_batch_size = 8;
    config.optim.lr = 0.01;
    config.optim.schedule = Schedule::Constant;
    config
}

fn by_name(map: TensorMap) -> HashMap<String, Vec<f32>> {
    map.into_iter().map(|(n, t)| (n, t.data)).collect()
}

#[test]
fn a_checkpoint_fine_tunes_to_other_classes_with_a_frozen_trunk_and_resumes_frozen() {
    let (source_data, target_data, runs) =
        (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    alexnet::synthetic::write_noise_folder(source_data.path(), 3, 4, 40).unwrap();
    alexnet::synthetic::write_noise_folder(target_data.path(), 2, 6, 40).unwrap();

    // A source run on three classes.
    Trainer::new(folder_config(Preset::Mini, source_data.path(), runs.path(), "source"), backend())
        .unwrap()
        .fit(&mut Silent)
        .unwrap();
    let source_file = runs.path().join("source/checkpoints/epoch-0001.safetensors");
    let source = by_name(load_tensors(&source_file).unwrap().0);

    // Two classes: without a new head the file's three-way fc8 does not fit, and the error says what to do.
    let mut config = folder_config(Preset::Mini, target_data.path(), runs.path(), "tuned");
    config.weights = Some(StartWeights { file: source_file.clone(), new_head: false, freeze: true });
    let err = Trainer::new(config.clone(), backend()).err().unwrap().to_string();
    assert!(err.contains("fc8.weight") && err.contains("--new-head"), "{err}");
    // Weights of another preset are named as such.
    let mut wrong = config.clone();
    wrong.preset = Preset::Torchvision;
    let err = Trainer::new(wrong, backend()).err().unwrap().to_string();
    assert!(err.contains("mini model") && err.contains("--preset mini"), "{err}");

    config.weights = Some(StartWeights { file: source_file, new_head: true, freeze: true });
    config.optim.epochs = 3;
    config.optim.max_steps = Some(3);
    let mut trainer = Trainer::new(config, backend()).unwrap();
    let arch = trainer.arch().clone();
    let fresh = by_name(init_params(&arch, trainer.config().init, trainer.config().seed));
    let stopped = trainer.fit(&mut Silent).unwrap();
    assert!(stopped.stopped_early.is_some());
    drop(trainer);
    let mut resumed = Trainer::resume(&runs.path().join("tuned"), backend(), None).unwrap();
    let result = resumed.fit(&mut Silent).unwrap();
    assert_eq!(result.epochs, 3);
    let val = result.val.expect("validation every epoch");
    assert!(val.loss.is_finite() && val.images > 0);

    let tuned = by_name(resumed.params_to_host().unwrap());
    for spec in arch.params() {
        let now = &tuned[&spec.name];
        if spec.name.starts_with("fc8.") {
            assert_ne!(now, &fresh[&spec.name], "{} did not train", spec.name);
            assert_eq!(spec.dims[0], 2, "{} is for the new class count", spec.name);
        } else {
            assert_eq!(now, &source[&spec.name], "{} is frozen but changed (through the resume too)", spec.name);
        }
    }
}

#[test]
fn torchvision_state_dict_fine_tunes_a_new_head() {
    let (data, runs, files) =
        (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    alexnet::synthetic::write_noise_folder(data.path(), 2, 4, 40).unwrap();
    // A 1000-class state_dict as PyTorch saves it (He-initialised stand-in for torchvision's).
    let pretrained =
        init_params(&Architecture::default_for(Preset::Torchvision).unwrap(), Preset::Torchvision.default_init(), 9);
    let file = files.path().join("alexnet-torchvision.safetensors");
    common::save_like_pytorch(&pretrained, &file);

    let mut config = folder_config(Preset::Torchvision, data.path(), runs.path(), "tv");
    config.data.pca_lighting = false;
    config.weights = Some(StartWeights { file, new_head: true, freeze: true });
    let mut trainer = Trainer::new(config, backend()).unwrap();
    assert_eq!(trainer.info().input, [3, 224, 224]);
    assert_eq!(trainer.info().mean, [0.485, 0.456, 0.406], "torchvision's normalisation, not the folder's");
    assert_eq!(trainer.info().resize, Some(256));
    let result = trainer.fit(&mut Silent).unwrap();
    assert!(result.val.is_some_and(|v| v.loss.is_finite()));

    let pretrained = by_name(pretrained);
    let tuned = by_name(load_tensors(&runs.path().join("tv/checkpoints/epoch-0001.safetensors")).unwrap().0);
    for (name, values) in &tuned {
        match name.starts_with("classifier.6.") {
            true => assert_eq!(values.len(), if name.ends_with("weight") { 2 * 4096 } else { 2 }),
            false => assert_eq!(values, &pretrained[name], "{name} is frozen but changed"),
        }
    }
}
