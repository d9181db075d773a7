//! The verifier's budget: the whole program verifies within a small instruction count, with
//! and without every diagnostic on (`.ci/kernel-matrix` runs these apart: `the_program_verifies`).

use super::*;

/// The verifier's work on the whole program stays small (about 98 000 instructions on Linux
/// 6.18 with the peer challenge (its cookie code four global functions since issue 25, 66 000
/// before), the bogus-source check, the path check, the prefix count and the event limits, the
/// last three global functions; the kernel's limit is 1 000 000). A
/// cookie path that used the parser's offsets, which differ along every parsing path, once made
/// it 244 000 and start-up slow; an inlined path check made it 303 000 (now a global function,
/// verified once).
#[test]
fn the_program_verifies_within_a_small_budget() {
    let x = TestXdp::load(&settings("111", ""));
    let info = x.dp.program().unwrap().info().unwrap();
    // Linux 5.16+ reports the count.
    if let Some(n) = info.verified_instruction_count() {
        assert!(n < 150_000, "the verifier processed {n} instructions");
    }
}

/// With every diagnostic switched on (`log_level = "trace"`) the program still verifies,
/// within the same budget; off, the diagnostics are dead code the verifier removes, so the
/// default load above costs what it cost before they existed.
#[test]
fn the_program_verifies_with_every_diagnostic_on() {
    let off = TestXdp::load(&settings("111", ""));
    let on = TestXdp::load_with_log_level(&settings("111", ""), 5);
    let count = |x: &TestXdp| {
        x.dp.program()
            .unwrap()
            .info()
            .unwrap()
            .verified_instruction_count()
    };
    if let (Some(off), Some(on)) = (count(&off), count(&on)) {
        eprintln!("verified instructions: diagnostics off {off}, on {on}");
        assert!(on < 150_000, "the verifier processed {on} instructions");
        assert!(
            on > off,
            "diagnostics on ({on}) must cost verification over off ({off})"
        );
    }
    // Verdicts are the same with diagnostics on.
    assert_eq!(on.run(&Packet::tcp("10.1.0.9", 111, SYN).build()), XDP_DROP);
    assert_eq!(
        on.run(&Packet::tcp("127.0.0.9", 111, SYN).build()),
        XDP_PASS,
        "bogus source"
    );
}
