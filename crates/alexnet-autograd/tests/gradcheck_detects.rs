//! The gradient checker itself: it must flag a gradient that is wrong.

use std::sync::Arc;

use alexnet_autograd::{CpuBackend, GradcheckConfig, HostTensor, ParamStore, gradcheck};

#[test]
fn a_kink_inside_the_step_is_flagged() {
    // ReLU at 0.001 with eps = 0.01: the central difference sees slope 0.55, backward says 1.
    let backend = Arc::new(CpuBackend::new());
    let mut store = ParamStore::new(backend.clone());
    let inputs = [HostTensor::new(&[2], vec![0.001, 0.5]).unwrap()];
    let report =
        gradcheck(&backend, &mut store, &inputs, &GradcheckConfig::default(), |tape, _, xs| tape.relu(xs[0])).unwrap();
    assert_eq!(report.checked, 2);
    assert_eq!(report.failures.len(), 1, "{report:?}");
    assert_eq!(report.failures[0].index, 0);
    assert!((report.failures[0].numeric - 0.55 * report.failures[0].analytic).abs() < 1e-2, "{report:?}");
}

#[test]
fn smooth_ops_pass_and_parameters_are_restored() {
    let backend = Arc::new(CpuBackend::new());
    let mut store = ParamStore::new(backend.clone());
    store.insert("w", &[3, 2], &[0.5, -0.25, 1.0, 0.75, -1.5, 0.1]).unwrap();
    let before = store.value_to_host("w").unwrap();
    let inputs = [HostTensor::new(&[2, 2], vec![0.3, -0.7, 1.1, 0.2]).unwrap()];
    let report = gradcheck(&backend, &mut store, &inputs, &GradcheckConfig::default(), |tape, store, xs| {
        let w = tape.param(store, "w")?;
        let y = tape.linear(xs[0], w, None)?;
        tape.sigmoid(y)
    })
    .unwrap();
    report.assert_passed("linear + sigmoid");
    assert_eq!(report.checked, 4 + 6);
    assert_eq!(store.value_to_host("w").unwrap(), before);
}
