//! The device check: burn's autodiff against the hand-computed reference.

use tinytune::check;

use crate::device_under_test;

#[test]
fn forward_and_backward_agree_with_the_hand_computed_reference_within_1e_4() {
    let opened = device_under_test();
    let got = futures_lite::future::block_on(check::run(&opened.device)).expect("check runs");
    let want = check::reference();
    let diff = got.max_abs_diff(&want);
    assert!(diff <= 1e-4, "{}: max |Δ| {diff:e} vs reference (loss {} vs {})", opened.info.summary(), got.loss, want.loss);
    // The check must exercise real numbers, not zeros that trivially agree.
    assert!(want.loss > 0.05, "reference loss {}", want.loss);
}

#[test]
fn a_requested_wgpu_device_reports_its_adapter_and_limits() {
    let opened = device_under_test();
    if opened.info.kind == "wgpu" {
        let limits = opened.info.limits.as_ref().expect("wgpu devices report limits");
        assert!(limits.max_storage_buffer_binding_size >= 128 << 20, "{limits:?}");
        assert!(!opened.info.backend.is_empty());
    } else {
        assert!(opened.info.limits.is_none());
        assert_eq!(opened.info.kind, "cpu");
    }
}

#[test]
fn the_4_bit_check_the_page_shows_passes_on_the_device() {
    let opened = device_under_test();
    let q4 = futures_lite::future::block_on(check::q4(&opened.device)).expect("the 4-bit check runs");
    assert_eq!(q4.cases.len(), 15);
    assert!(q4.trusted);
    assert!(q4.equal, "{}: {:?}", opened.info.summary(), q4.cases);
    assert!(q4.fused_max_rel_diff <= 1e-5, "fused kernel off by {}", q4.fused_max_rel_diff);
    assert!(q4.cases.iter().all(|c| c.values > 0));
}
