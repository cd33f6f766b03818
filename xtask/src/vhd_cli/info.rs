//! `vhd info`: what the footer, header and chain say, for people or as JSON.

use super::size::human;
use serde_json::{Value, json};
use std::path::Path;
use vhd::header::{self, platform};
use vhd::{DiskType, Layer, OpenOptions, VHD_EPOCH_UNIX};

fn uuid(u: &[u8; 16]) -> String {
    let h: String = u.iter().map(|b| format!("{b:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    )
}

fn fourcc(b: [u8; 4]) -> String {
    b.iter()
        .map(|&c| {
            if c.is_ascii_graphic() || c == b' ' {
                c as char
            } else {
                '.'
            }
        })
        .collect::<String>()
}

/// UTC date of a VHD timestamp, without a date crate (civil-from-days).
fn date(ts: u32) -> String {
    let secs = u64::from(ts) + VHD_EPOCH_UNIX;
    let (days, rem) = (secs / 86400, secs % 86400);
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02} UTC",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

fn locator_name(code: u32) -> String {
    match code {
        platform::W2KU => "W2ku (absolute)".into(),
        platform::W2RU => "W2ru (relative)".into(),
        c => fourcc(c.to_be_bytes()),
    }
}

fn layer_json(layer: &mut Layer<vhd::fs::FileIo>, path: &Path) -> Value {
    let f = layer.footer().clone();
    let mut v = json!({
        "filename": path.display().to_string(),
        "format": "vpc",
        "subformat": layer.disk_type().name(),
        "virtual-size": layer.size(),
        "current-size": f.current_size,
        "original-size": f.original_size,
        "file-length": layer.file_len(),
        "geometry": { "cylinders": f.geometry.cylinders, "heads": f.geometry.heads, "sectors": f.geometry.sectors },
        "creator-app": fourcc(f.creator_app),
        "creator-version": format!("{}.{}", f.creator_version >> 16, f.creator_version & 0xffff),
        "creator-os": fourcc(f.creator_os.to_be_bytes()),
        "created": date(f.timestamp),
        "timestamp": f.timestamp,
        "uuid": uuid(&f.uuid),
        "saved-state": f.saved_state != 0,
        "features": f.features,
        "end-footer-valid": !layer.end_footer_bad(),
    });
    if let Some(h) = layer.header().cloned() {
        v["block-size"] = json!(h.block_size);
        v["max-table-entries"] = json!(h.max_table_entries);
        v["table-offset"] = json!(h.table_offset);
        v["allocated-blocks"] = json!(layer.allocated_blocks());
        if layer.disk_type() == DiskType::Differencing {
            let mut name = [0u8; 1024];
            let pname = header::utf16_to_utf8(&h.parent_name, true, &mut name)
                .map(|n| String::from_utf8_lossy(&name[..n]).into_owned());
            let mut locs = Vec::new();
            for (i, l) in h.locators.iter().enumerate().filter(|(_, l)| l.code != 0) {
                let mut raw = vec![0u8; l.data_length as usize];
                let text = match layer.read_locator(i, &mut raw) {
                    Ok(Some(n)) if matches!(l.code, platform::W2KU | platform::W2RU) => {
                        let mut out = vec![0u8; n * 2];
                        header::utf16_to_utf8(&raw[..n], false, &mut out)
                            .map(|m| String::from_utf8_lossy(&out[..m]).into_owned())
                    }
                    Ok(Some(n)) => Some(String::from_utf8_lossy(&raw[..n]).into_owned()),
                    _ => None,
                };
                locs.push(json!({ "platform": locator_name(l.code), "path": text }));
            }
            v["parent"] = json!({
                "uuid": uuid(&h.parent_uuid),
                "name": pname,
                "timestamp": h.parent_timestamp,
                "locators": locs,
            });
        }
    }
    v
}

pub fn run(path: &Path, as_json: bool) -> Result<(), String> {
    let (mut disk, paths) =
        vhd::fs::open_with_paths(path, OpenOptions::read_only()).map_err(|e| e.to_string())?;
    let chain: Vec<Value> = disk
        .layers_mut()
        .iter_mut()
        .zip(&paths)
        .map(|(l, p)| layer_json(l, p))
        .collect();
    if as_json {
        let mut top = chain[0].clone();
        if chain.len() > 1 {
            top["backing-chain"] = json!(
                chain[1..]
                    .iter()
                    .map(|c| c["filename"].clone())
                    .collect::<Vec<_>>()
            );
            top["chain"] = json!(chain);
        }
        println!(
            "{}",
            serde_json::to_string_pretty(&top).map_err(|e| e.to_string())?
        );
        return Ok(());
    }
    for (i, c) in chain.iter().enumerate() {
        if i > 0 {
            println!("\nparent image:");
        }
        print_human(c);
    }
    Ok(())
}

fn print_human(c: &Value) {
    let n = |k: &str| c[k].as_u64().unwrap_or(0);
    let s = |k: &str| c[k].as_str().unwrap_or("").to_string();
    println!("image: {}", s("filename"));
    println!("file format: vpc ({})", s("subformat"));
    println!(
        "virtual size: {} ({} bytes)",
        human(n("virtual-size")),
        n("virtual-size")
    );
    println!("current size: {} bytes (footer)", n("current-size"));
    println!(
        "file length: {} ({} bytes)",
        human(n("file-length")),
        n("file-length")
    );
    let g = &c["geometry"];
    println!(
        "geometry: {}/{}/{} (C/H/S)",
        g["cylinders"], g["heads"], g["sectors"]
    );
    println!(
        "creator: '{}' {} on '{}', created {}",
        s("creator-app"),
        s("creator-version"),
        s("creator-os"),
        s("created")
    );
    println!("uuid: {}", s("uuid"));
    if c.get("block-size").is_some() {
        println!(
            "block size: {} ({} of {} blocks allocated)",
            human(n("block-size")),
            n("allocated-blocks"),
            n("max-table-entries")
        );
    }
    if c["saved-state"].as_bool() == Some(true) {
        println!("saved state: yes (read-only)");
    }
    if c["end-footer-valid"].as_bool() == Some(false) {
        println!("warning: end footer invalid, using the copy at offset 0");
    }
    if let Some(p) = c.get("parent") {
        println!("parent uuid: {}", p["uuid"].as_str().unwrap_or(""));
        println!("parent name: {}", p["name"].as_str().unwrap_or("?"));
        for l in p["locators"].as_array().into_iter().flatten() {
            println!(
                "parent locator {}: {}",
                l["platform"].as_str().unwrap_or("?"),
                l["path"].as_str().unwrap_or("(unreadable)")
            );
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn dates() {
        assert_eq!(super::date(0), "2000-01-01 00:00:00 UTC");
        assert_eq!(super::date(5_097_600), "2000-02-29 00:00:00 UTC");
        assert_eq!(super::date(0x329a_5d3b), "2026-11-26 03:00:11 UTC");
    }
}
