//! The tape's bookkeeping and the parameter store, with hand-computed expectations.

use std::sync::Arc;

use alexnet_autograd::{AutogradError, CpuBackend, HostTensor, Mode, ParamStore, Tape};
use alexnet_core::{Backend, SgdStep};

fn setup() -> (Arc<CpuBackend>, ParamStore<CpuBackend>) {
    let backend = Arc::new(CpuBackend::new());
    let mut store = ParamStore::new(backend.clone());
    store.insert("w", &[2, 2], &[1.0, 2.0, 3.0, 4.0]).unwrap();
    store.insert("unused", &[3], &[1.0, 1.0, 1.0]).unwrap();
    store.insert_state("stats", &[2], &[0.0, 0.0]).unwrap();
    (backend, store)
}

#[test]
fn gradients_of_tensors_used_twice_add_up() {
    let (backend, mut store) = setup();
    let mut tape = Tape::train(backend);
    // Two handles of one parameter, one of them used twice: loss = mean(w + w + w) = 3 mean(w).
    let (w1, w2) = (tape.param(&store, "w").unwrap(), tape.param(&store, "w").unwrap());
    let twice = tape.add(w1, w1).unwrap();
    let thrice = tape.add(twice, w2).unwrap();
    let loss = tape.mean(thrice).unwrap();
    assert_eq!(tape.scalar(loss).unwrap(), 7.5);
    tape.backward(loss, &mut store).unwrap();
    assert_eq!(store.grad_to_host("w").unwrap(), vec![0.75; 4]);
}

#[test]
fn backward_zeroes_gradients_the_loss_does_not_reach() {
    let (backend, mut store) = setup();
    let mut tape = Tape::train(backend);
    let u = tape.param(&store, "unused").unwrap();
    let loss = tape.mean(u).unwrap();
    tape.backward(loss, &mut store).unwrap();
    assert_eq!(store.grad_to_host("unused").unwrap(), vec![1.0 / 3.0; 3]);
    tape.reset();
    let w = tape.param(&store, "w").unwrap();
    let loss = tape.mean(w).unwrap();
    tape.backward(loss, &mut store).unwrap();
    assert_eq!(store.grad_to_host("unused").unwrap(), vec![0.0; 3]);
}

#[test]
fn stages_on_two_tapes_keep_each_others_gradients() {
    // loss = mean(w * 2 + unused) recorded as two stages: h = w * 2 on the first tape, then
    // mean(h' + unused) on the second, with h' a variable holding h.
    let (backend, mut store) = setup();
    let (mut first, mut second) = (Tape::train(backend.clone()), Tape::train(backend));
    let w = first.param(&store, "w").unwrap();
    let h = first.scale(w, 2.0).unwrap();
    let h2 = second.variable(&first.to_host(h).unwrap(), &[2, 2]).unwrap();
    let u = second.param(&store, "unused").unwrap();
    let u_mean = second.mean(u).unwrap();
    let h_mean = second.mean(h2).unwrap();
    let loss = second.add(h_mean, u_mean).unwrap();
    second.backward_stage(loss, &[1.0], &mut store).unwrap();
    let dh = second.grad_to_host(h2).unwrap().expect("the variable's gradient");
    assert_eq!(dh, vec![0.25; 4]);
    first.backward_stage(h, &dh, &mut store).unwrap();
    assert_eq!(store.grad_to_host("w").unwrap(), vec![0.5; 4]);
    assert_eq!(store.grad_to_host("unused").unwrap(), vec![1.0 / 3.0; 3], "the first stage kept it");
    // backward_with, by contrast, zeroes what its tape did not use.
    first.reset();
    let w = first.param(&store, "w").unwrap();
    first.backward_with(w, &[1.0; 4], &mut store).unwrap();
    assert_eq!(store.grad_to_host("unused").unwrap(), vec![0.0; 3]);
}

#[test]
fn inputs_get_gradients_only_when_asked() {
    let (backend, mut store) = setup();
    let mut tape = Tape::train(backend);
    let x = tape.input(&[1.0, -2.0], &[2]).unwrap();
    let v = tape.variable(&[3.0, 4.0], &[2]).unwrap();
    let s = tape.add(x, v).unwrap();
    let y = tape.scale(s, 2.0).unwrap();
    tape.backward_with(y, &[1.0, 10.0], &mut store).unwrap();
    assert_eq!(tape.grad_to_host(x).unwrap(), None);
    assert_eq!(tape.grad_to_host(v).unwrap(), Some(vec![2.0, 20.0]));
}

#[test]
fn sgd_waits_for_the_tape_and_follows_the_paper_update() {
    let (backend, mut store) = setup();
    let step = SgdStep { lr: 0.1, momentum: 0.9, weight_decay: 0.5 };
    let mut tape = Tape::train(backend);
    let w = tape.param(&store, "w").unwrap();
    let loss = tape.mean(w).unwrap();
    assert!(matches!(store.sgd_step(&step), Err(AutogradError::ParamInUse { name }) if name == "w"));
    tape.backward(loss, &mut store).unwrap();
    store.sgd_step(&step).unwrap();
    // v = 0.9 * 0 - 0.5 * 0.1 * w - 0.1 * 0.25; w += v.
    let want: Vec<f32> = [1.0f32, 2.0, 3.0, 4.0].iter().map(|&w| w + (-0.05 * w - 0.025)).collect();
    let got = store.value_to_host("w").unwrap();
    for (g, w) in got.iter().zip(&want) {
        assert!((g - w).abs() < 1e-6, "{got:?} vs {want:?}");
    }
    // State entries are not touched by SGD.
    assert_eq!(store.value_to_host("stats").unwrap(), vec![0.0, 0.0]);
}

#[test]
fn frozen_parameters_get_no_gradient_and_no_update_and_prune_the_backward() {
    let backend = Arc::new(CpuBackend::new());
    let mut store = ParamStore::new(backend.clone());
    store.insert("trunk", &[2, 2], &[1.0, 2.0, 3.0, 4.0]).unwrap();
    store.insert("head", &[1, 2], &[0.5, -1.0]).unwrap();
    store.insert_state("stats", &[1], &[0.0]).unwrap();
    assert!(matches!(store.set_frozen("stats", true), Err(AutogradError::ParamKind { .. })));
    assert!(matches!(store.set_frozen("nope", true), Err(AutogradError::UnknownParam { .. })));
    store.set_frozen("trunk", true).unwrap();
    assert!(store.is_frozen(store.id("trunk").unwrap()).unwrap());
    let step = SgdStep { lr: 0.1, momentum: 0.9, weight_decay: 0.5 };
    let mut tape = Tape::train(backend);
    // loss = head . relu(trunk x), x = (1, 1): trunk x = (3, 7), loss = 1.5 - 7 = -5.5.
    let x = tape.input(&[1.0, 1.0], &[1, 2]).unwrap();
    let trunk = tape.param(&store, "trunk").unwrap();
    let hidden = tape.linear(x, trunk, None).unwrap();
    let hidden = tape.relu(hidden).unwrap();
    let head = tape.param(&store, "head").unwrap();
    let y = tape.linear(hidden, head, None).unwrap();
    let loss = tape.mean(y).unwrap();
    assert_eq!(tape.scalar(loss).unwrap(), -5.5);
    tape.backward(loss, &mut store).unwrap();
    assert!(tape.grad(hidden).unwrap().is_none(), "nothing before the head needs a gradient");
    assert_eq!(store.grad_to_host("trunk").unwrap(), vec![0.0; 4]);
    assert_eq!(store.grad_to_host("head").unwrap(), vec![3.0, 7.0]);
    store.sgd_step(&step).unwrap();
    assert_eq!(store.value_to_host("trunk").unwrap(), vec![1.0, 2.0, 3.0, 4.0], "no update, no weight decay");
    // v = -0.5 * 0.1 * w - 0.1 * grad; w += v.
    let want = [0.5 - 0.025 - 0.3, -1.0 + 0.05 - 0.7];
    let got = store.value_to_host("head").unwrap();
    assert!(got.iter().zip(want).all(|(g, w)| (g - w).abs() < 1e-6), "{got:?} vs {want:?}");
    // Thawed, the trunk trains again.
    tape.reset();
    store.set_frozen("trunk", false).unwrap();
    let trunk = tape.param(&store, "trunk").unwrap();
    let loss = tape.mean(trunk).unwrap();
    tape.backward(loss, &mut store).unwrap();
    assert_eq!(store.grad_to_host("trunk").unwrap(), vec![0.25; 4]);
}

#[test]
fn host_maps_round_trip_and_reject_mismatches() {
    let (backend, store) = setup();
    let map = store.to_host_map().unwrap();
    assert_eq!(map.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>(), ["w", "unused", "stats"]);
    let mut other = ParamStore::new(backend);
    other.insert("w", &[2, 2], &[0.0; 4]).unwrap();
    other.insert("unused", &[3], &[0.0; 3]).unwrap();
    other.insert_state("stats", &[2], &[5.0, 5.0]).unwrap();
    other.load_from_host(&map).unwrap();
    assert_eq!(other.to_host_map().unwrap(), map);

    let missing = &map[..2];
    assert_eq!(other.load_from_host(missing), Err(AutogradError::MissingParam { name: "stats".into() }));
    let mut wrong = map.clone();
    wrong[0].1 = HostTensor::new(&[4], vec![0.0; 4]).unwrap();
    assert_eq!(
        other.load_from_host(&wrong),
        Err(AutogradError::Shape { op: "ParamStore::load", expected: vec![2, 2], got: vec![4] })
    );
    let mut unknown = map.clone();
    unknown[0].0 = "nope".into();
    assert_eq!(other.load_from_host(&unknown), Err(AutogradError::UnknownParam { name: "nope".into() }));

    let momentum = store.momentum_to_host_map().unwrap();
    assert_eq!(momentum.len(), 2, "state entries have no momentum");
    other.load_momentum_from_host(&momentum).unwrap();
}

#[test]
fn parameter_misuse_is_an_error() {
    let (backend, mut store) = setup();
    assert_eq!(store.insert("w", &[1], &[0.0]), Err(AutogradError::DuplicateParam { name: "w".into() }));
    assert!(matches!(store.insert("x", &[2], &[0.0]), Err(AutogradError::HostLength { expected: 2, got: 1, .. })));
    let mut tape = Tape::train(backend.clone());
    assert!(matches!(tape.param(&store, "stats"), Err(AutogradError::ParamKind { .. })));
    assert!(matches!(tape.param(&store, "nope"), Err(AutogradError::UnknownParam { .. })));
    let w = tape.param(&store, "w").unwrap();
    let other = ParamStore::new(backend);
    assert!(matches!(tape.param(&other, "w"), Err(AutogradError::UnknownParam { .. })));
    let loss = tape.mean(w).unwrap();
    let mut other = other;
    assert!(matches!(tape.backward(loss, &mut other), Err(AutogradError::ForeignStore { .. })));
    tape.backward(loss, &mut store).unwrap();
    // After backward the tape no longer holds the parameter's value.
    assert!(matches!(tape.value(w), Err(AutogradError::Released { .. })));
}

#[test]
fn inference_records_nothing_and_prints_so() {
    let (backend, _) = setup();
    let mut tape = Tape::inference(backend.clone());
    let x = tape.input(&[1.0, -1.0, 2.0, -2.0], &[1, 4]).unwrap();
    let y = tape.relu(x).unwrap();
    let d = tape.dropout(y, 0.5, 1).unwrap();
    assert_eq!(tape.to_host(d).unwrap(), vec![1.0, 0.0, 2.0, 0.0]);
    let printed = format!("{tape:?}");
    assert_eq!(printed.matches("(untracked)").count(), 3, "{printed}");

    let mut train = Tape::new(backend, Mode::Train);
    let x = train.input(&[1.0, -1.0], &[1, 2]).unwrap();
    let y = train.relu(x).unwrap();
    train.mean(y).unwrap();
    let printed = format!("{train:?}");
    assert!(printed.contains("Relu(#0)") && printed.contains("mean(#1)"), "{printed}");
}

#[test]
fn cpu_backend_rejects_bad_buffers_and_labels() {
    let cpu = CpuBackend::new();
    let mut y = vec![0.0; 3];
    assert!(matches!(cpu.copy(&vec![0.0; 2], &mut y), Err(alexnet_core::Error::BufferSize { op: "copy", .. })));
    let (mut probs, mut loss, mut summary) = (vec![0.0; 4], vec![0.0; 1], vec![0.0; 6]);
    let err = cpu
        .softmax_xent_forward(2, 2, &vec![0.0; 4], &vec![0.0, 1.5], &mut probs, &mut loss, &mut summary)
        .unwrap_err();
    assert!(matches!(err, alexnet_core::Error::InvalidParameter { what: "label", .. }), "{err}");
}

#[test]
fn one_thread_and_many_threads_agree() {
    let many = Arc::new(CpuBackend::new());
    let one = Arc::new(CpuBackend::with_threads(1).unwrap());
    let case = &alexnet_autograd::conformance::cases(alexnet_autograd::conformance::Family::Network)[0];
    let a = alexnet_autograd::conformance::run_case(&many, case).unwrap();
    let b = alexnet_autograd::conformance::run_case(&one, case).unwrap();
    alexnet_autograd::conformance::assert_close("output", &a.output, &b.output, 1e-6);
    for (x, y) in a.param_grads.iter().zip(&b.param_grads) {
        alexnet_autograd::conformance::assert_close("param grad", x, y, 1e-6);
    }
}

#[test]
fn backward_notify_reports_each_parameter_once_with_its_final_gradient() {
    let backend = Arc::new(CpuBackend::new());
    let mut store = ParamStore::new(backend.clone());
    store.insert("fc1.weight", &[3, 2], &[0.5, -1.0, 2.0, 0.25, -0.5, 1.5]).unwrap();
    store.insert("fc2.weight", &[2, 3], &[1.0, -2.0, 0.5, 0.75, 1.0, -1.0]).unwrap();
    store.insert("untouched", &[2], &[1.0, 1.0]).unwrap();
    store.insert_state("stats", &[2], &[0.0, 0.0]).unwrap();
    // fc1 is used twice (its gradient has two contributions), fc2 once.
    let run = |tape: &mut Tape<CpuBackend>, store: &ParamStore<CpuBackend>| {
        let x = tape.input(&[1.0, -2.0, 0.5, 3.0], &[2, 2]).unwrap();
        let w1 = tape.param(store, "fc1.weight").unwrap();
        let h = tape.linear(x, w1, None).unwrap();
        let h = tape.relu(h).unwrap();
        let w2 = tape.param(store, "fc2.weight").unwrap();
        let y = tape.linear(h, w2, None).unwrap();
        let again = tape.param(store, "fc1.weight").unwrap();
        let extra = tape.mean(again).unwrap();
        let loss = tape.mean(y).unwrap();
        tape.add(loss, extra).unwrap()
    };
    let mut tape = Tape::train(backend.clone());
    let loss = run(&mut tape, &store);
    let mut seen: Vec<(String, Vec<f32>)> = Vec::new();
    tape.backward_notify(loss, &mut store, |store, id| -> Result<(), AutogradError> {
        let name = store.name(id)?.to_string();
        seen.push((name.clone(), store.grad_to_host(&name)?));
        Ok(())
    })
    .unwrap();
    let names: Vec<&str> = seen.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["fc2.weight", "fc1.weight", "untouched"], "last layer first, untouched last");
    // What each callback saw is what a plain backward leaves.
    let mut plain = Tape::train(backend);
    let loss = run(&mut plain, &store);
    plain.backward(loss, &mut store).unwrap();
    for (name, at_ready) in &seen {
        assert_eq!(&store.grad_to_host(name).unwrap(), at_ready, "{name}");
    }
    assert_eq!(store.grad_to_host("untouched").unwrap(), vec![0.0, 0.0]);
}
