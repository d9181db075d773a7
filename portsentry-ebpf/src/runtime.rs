//! What every program object of this crate needs once: a panic handler (no_std; the verifier
//! rejects any path that could reach it, so it never runs) and the GPL licence section the
//! kernel requires for the helpers we call.

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
