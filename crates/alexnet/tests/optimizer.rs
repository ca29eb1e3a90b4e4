//! The SGD update against the paper's formula, computed here in f64:
//! `v <- momentum v - weight_decay lr w - lr grad; w <- w + v`.

use std::sync::Arc;

use alexnet_autograd::{CpuBackend, ParamStore, Tape};
use alexnet_core::{Backend, SgdStep};

#[test]
fn sgd_step_matches_the_papers_formula() {
    let backend = CpuBackend::new();
    let n = 1000;
    let w0: Vec<f32> = (0..n).map(|i| ((i as f32) * 0.37).sin()).collect();
    let step = SgdStep { lr: 0.01, momentum: 0.9, weight_decay: 0.0005 };
    let (mut w, mut v) = (backend.upload(&w0).unwrap(), backend.zeros(n).unwrap());
    let mut w_ref: Vec<f64> = w0.iter().map(|&x| f64::from(x)).collect();
    let mut v_ref = vec![0.0f64; n];
    for t in 0..5 {
        let g: Vec<f32> = (0..n).map(|i| ((i * (t + 3)) as f32 * 0.11).cos()).collect();
        backend.sgd_step(&step, &mut w, &backend.upload(&g).unwrap(), &mut v).unwrap();
        let (lr, m, wd) = (f64::from(step.lr), f64::from(step.momentum), f64::from(step.weight_decay));
        for i in 0..n {
            v_ref[i] = m * v_ref[i] - wd * lr * w_ref[i] - lr * f64::from(g[i]);
            w_ref[i] += v_ref[i];
        }
    }
    let mut got = vec![0.0; n];
    backend.download(&w, &mut got).unwrap();
    for i in 0..n {
        assert!((f64::from(got[i]) - w_ref[i]).abs() < 1e-6, "w[{i}] = {} vs {}", got[i], w_ref[i]);
    }
    backend.download(&v, &mut got).unwrap();
    for i in 0..n {
        assert!((f64::from(got[i]) - v_ref[i]).abs() < 1e-7, "v[{i}] = {} vs {}", got[i], v_ref[i]);
    }
}

/// Through the parameter store and a tape: the gradient of `mean(w)` is `1/n` everywhere,
/// so one step from zero momentum gives `w - wd lr w - lr / n`.
#[test]
fn store_step_applies_the_formula_to_the_gradient() {
    let backend = Arc::new(CpuBackend::new());
    let mut store = ParamStore::new(backend.clone());
    let w0 = [1.0f32, -2.0, 0.5, 4.0];
    store.insert("w", &[4], &w0).unwrap();
    let mut tape = Tape::train(backend);
    let w = tape.param(&store, "w").unwrap();
    let loss = tape.mean(w).unwrap();
    tape.backward(loss, &mut store).unwrap();
    let step = SgdStep { lr: 0.1, momentum: 0.9, weight_decay: 0.0005 };
    store.sgd_step(&step).unwrap();
    let got = store.value_to_host("w").unwrap();
    for (g, &x) in got.iter().zip(&w0) {
        let x = f64::from(x);
        let expected = x - 0.0005 * 0.1 * x - 0.1 * 0.25;
        assert!((f64::from(*g) - expected).abs() < 1e-6, "{g} vs {expected}");
    }
}
