//! The suite's OVF cases: a package the export command makes from a TOML manifest, and one
//! written by hand (`manifests/ovf/probe-hyperv.ovf`, in the shape Hyper-V tools produce),
//! each run as the manifest of its boot case.

use crate::util::{out_dir, root};
use anyhow::{Context, Result};
use std::path::PathBuf;

pub const EXPORTED: &str = "target/janus/ovf-exported/probe-xen.ovf";
pub const HAND_WRITTEN: &str = "target/janus/ovf-hand/probe-hyperv.ovf";

/// `cargo xtask ovf export` of manifests/probe-xen.toml.
pub fn setup_exported() -> Result<()> {
    let dir = out_dir().join("ovf-exported");
    let _ = std::fs::remove_dir_all(&dir);
    let staged = crate::stage_in(
        Some(root().join("manifests/probe-xen.toml")),
        &crate::image::BuildOpts::default(),
        &out_dir().join("ovf-exported-stage"),
    )?;
    crate::ovf::export(&staged, "probe-xen", &dir)
}

/// The hand-written descriptor beside the files it names.
pub fn setup_hand_written() -> Result<()> {
    let dir = out_dir().join("ovf-hand");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let probe = crate::image::build_guest("probe", false)?;
    let guests: PathBuf = probe.parent().context("the probe has a folder")?.into();
    for (from, to) in [
        (
            root().join("manifests/ovf/probe-hyperv.ovf"),
            "probe-hyperv.ovf",
        ),
        (probe.clone(), "probe"),
        (guests.join("probe-disk.vhd"), "probe-disk.vhd"),
    ] {
        std::fs::copy(&from, dir.join(to))
            .with_context(|| format!("cannot copy {}", from.display()))?;
    }
    Ok(())
}
