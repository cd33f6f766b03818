//! The host's shutdown request reaches the guest through `control/shutdown`, whether or not
//! its xenbus is up yet; without a store there is no way to ask.

mod common;

use common::*;
use virt::personality::{Personality, ShutdownKind};

fn node(e: &Env) -> Option<Vec<u8>> {
    e.xen
        .store()
        .read(b"/local/domain/1/control/shutdown")
        .map(<[u8]>::to_vec)
}

fn attach(e: &mut Env) {
    let p = e.arg(ARG, &param(1, 0));
    assert_eq!(e.call(op::HVM_OP, 1, p, 0), 0);
}

#[test]
fn the_request_lands_in_control_shutdown() {
    let mut cfg = config();
    cfg.store_pfn = Some(STORE_PFN);
    // Asked before the guest connected: written when it does.
    let mut e = Env::with(cfg, 1);
    e.boot();
    assert!(
        e.xen
            .request_shutdown(ShutdownKind::PowerOff, &mut e.mem, &mut e.host)
    );
    assert_eq!(node(&e), None);
    attach(&mut e);
    assert_eq!(node(&e).as_deref(), Some(&b"poweroff"[..]));
    // Asked while connected: written at once.
    let mut e = Env::with(cfg, 1);
    e.boot();
    attach(&mut e);
    assert_eq!(node(&e).as_deref(), Some(&b""[..]));
    assert!(
        e.xen
            .request_shutdown(ShutdownKind::Reboot, &mut e.mem, &mut e.host)
    );
    assert_eq!(node(&e).as_deref(), Some(&b"reboot"[..]));
    // No store, no way to ask.
    let mut e = Env::new();
    assert!(
        !e.xen
            .request_shutdown(ShutdownKind::PowerOff, &mut e.mem, &mut e.host)
    );
}
