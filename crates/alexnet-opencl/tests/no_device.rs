//! Behaviour without a usable OpenCL driver, checked in a child process whose ICD loader is
//! pointed at an empty vendor directory (or that has no loader at all): `test_backend` skips
//! with a printed reason, or panics when `ALEX_REQUIRE_OPENCL=1`.

use std::process::Command;

const CHILD: &str = "ALEX_OPENCL_TEST_CHILD";

#[test]
fn missing_driver_skips_or_fails_on_request() {
    if std::env::var_os(CHILD).is_some() {
        let err = alexnet_opencl::list_devices().unwrap_err();
        assert!(
            matches!(err, alexnet_opencl::OpenClError::NoDevice { .. } | alexnet_opencl::OpenClError::NoRuntime),
            "{err}"
        );
        let core: alexnet_core::Error = err.into();
        assert!(matches!(core, alexnet_core::Error::Backend { .. }));
        assert!(alexnet_opencl::test_backend().is_none());
        return;
    }
    let empty = std::env::temp_dir().join(format!("alexnet-opencl-no-icd-{}", std::process::id()));
    std::fs::create_dir_all(&empty).unwrap();
    let run = |require: &str| {
        Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "missing_driver_skips_or_fails_on_request", "--nocapture", "--test-threads=1"])
            .env(CHILD, "1")
            .env("OCL_ICD_VENDORS", &empty)
            .env("ALEX_REQUIRE_OPENCL", require)
            .output()
            .unwrap()
    };
    let skipped = run("0");
    let stderr = String::from_utf8_lossy(&skipped.stderr);
    assert!(skipped.status.success(), "child failed: {stderr}");
    assert!(stderr.contains("skipping OpenCL test"), "{stderr}");
    let required = run("1");
    let text = String::from_utf8_lossy(&required.stderr).into_owned() + &String::from_utf8_lossy(&required.stdout);
    assert!(!required.status.success(), "ALEX_REQUIRE_OPENCL=1 must fail: {text}");
    assert!(text.contains("ALEX_REQUIRE_OPENCL=1"), "{text}");
    std::fs::remove_dir_all(&empty).ok();
}
