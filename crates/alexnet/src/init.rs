//! Parameter initialisation: the paper's N(0, 0.01^2) with biases of 1 in conv2, conv4,
//! conv5 and the hidden dense layers, or He/Kaiming normal.
//!
//! Each tensor draws from its own counter-based stream keyed by the run's seed and the
//! tensor's name, so a tensor's initial value does not depend on the order of the others.

use alexnet_autograd::HostTensor;
use alexnet_core::rng::{mix64, uniform};

use crate::checkpoint::TensorMap;
use crate::preset::{Architecture, InitScheme, ParamRole, ParamSpec};

/// FNV-1a of a name: the stream key of its tensor.
fn name_key(name: &str) -> u64 {
    name.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3))
}

/// `len` draws from N(0, std^2) by Box-Muller on the stream `(seed, name)`.
pub fn normal(seed: u64, name: &str, len: usize, std: f32) -> Vec<f32> {
    let stream = mix64(seed, name_key(name));
    (0..len as u64)
        .map(|i| {
            // 1 - u lies in (0, 1], so the logarithm is finite.
            let u1 = 1.0 - f64::from(uniform(stream, 2 * i));
            let u2 = f64::from(uniform(stream, 2 * i + 1));
            let z = (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos();
            (z * f64::from(std)) as f32
        })
        .collect()
}

/// The initial value of one parameter tensor.
pub fn init_param(spec: &ParamSpec, scheme: InitScheme, seed: u64) -> HostTensor {
    let n = spec.numel();
    let data = match (spec.role, scheme) {
        (ParamRole::Weight { .. }, InitScheme::Paper) => normal(seed, &spec.name, n, 0.01),
        (ParamRole::Weight { fan_in }, InitScheme::He) => normal(seed, &spec.name, n, (2.0 / fan_in as f32).sqrt()),
        (ParamRole::Bias { paper_value }, InitScheme::Paper) => vec![paper_value; n],
        (ParamRole::Bias { .. }, InitScheme::He) | (ParamRole::BnShift | ParamRole::RunningMean, _) => vec![0.0; n],
        (ParamRole::BnScale | ParamRole::RunningVar, _) => vec![1.0; n],
    };
    HostTensor { dims: spec.dims.clone(), data }
}

/// Initial values of every parameter of `arch`, in layer order.
pub fn init_params(arch: &Architecture, scheme: InitScheme, seed: u64) -> TensorMap {
    arch.params().map(|p| (p.name.clone(), init_param(p, scheme, seed))).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::preset::Preset;

    fn moments(x: &[f32]) -> (f64, f64) {
        let n = x.len() as f64;
        let mean = x.iter().map(|&v| f64::from(v)).sum::<f64>() / n;
        let var = x.iter().map(|&v| (f64::from(v) - mean).powi(2)).sum::<f64>() / n;
        (mean, var.sqrt())
    }

    #[test]
    fn paper_init_matches_the_paper() {
        let arch = Architecture::default_for(Preset::Paper).unwrap();
        let params = init_params(&arch, InitScheme::Paper, 1);
        let get = |name: &str| &params.iter().find(|(n, _)| n == name).unwrap().1;
        let (mean, std) = moments(&get("conv2.weight").data);
        assert!(mean.abs() < 2e-4 && (std - 0.01).abs() < 2e-4, "{mean} {std}");
        for (name, value) in [
            ("conv1.bias", 0.0),
            ("conv2.bias", 1.0),
            ("conv3.bias", 0.0),
            ("conv4.bias", 1.0),
            ("conv5.bias", 1.0),
            ("fc6.bias", 1.0),
            ("fc7.bias", 1.0),
            ("fc8.bias", 0.0),
        ] {
            assert!(get(name).data.iter().all(|&b| b == value), "{name}");
        }
        assert_eq!(get("fc6.weight").dims, [4096, 9216]);
    }

    #[test]
    fn he_init_scales_by_fan_in_and_is_reproducible() {
        let arch = Architecture::default_for(Preset::Mini).unwrap();
        let a = init_params(&arch, InitScheme::He, 5);
        let b = init_params(&arch, InitScheme::He, 5);
        let c = init_params(&arch, InitScheme::He, 6);
        assert_eq!(a, b);
        assert_ne!(a, c);
        let spec = arch.params().find(|p| p.name == "conv3.weight").unwrap();
        let ParamRole::Weight { fan_in } = spec.role else { panic!("conv3.weight is a weight") };
        let (_, std) = moments(&a.iter().find(|(n, _)| n == "conv3.weight").unwrap().1.data);
        let expected = (2.0 / fan_in as f64).sqrt();
        assert!((std / expected - 1.0).abs() < 0.03, "{std} vs {expected}");
        assert!(a.iter().filter(|(n, _)| n.ends_with(".bias")).all(|(_, t)| t.data.iter().all(|&v| v == 0.0)));
    }

    #[test]
    fn batch_norm_state_starts_at_identity() {
        let arch = Architecture::default_for(Preset::KerasBn).unwrap();
        let params = init_params(&arch, InitScheme::He, 0);
        let get = |name: &str| &params.iter().find(|(n, _)| n == name).unwrap().1.data;
        assert!(get("conv1_bn.weight").iter().all(|&v| v == 1.0));
        assert!(get("conv1_bn.bias").iter().all(|&v| v == 0.0));
        assert!(get("conv1_bn.running_mean").iter().all(|&v| v == 0.0));
        assert!(get("conv1_bn.running_var").iter().all(|&v| v == 1.0));
    }
}
