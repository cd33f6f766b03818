//! The data structures the controller reports: Identify (controller, namespace, active
//! namespace list, namespace identification descriptors) and the log pages (NVMe 1.4 §5.14,
//! §5.15), each written into a zeroed buffer.

use super::{ACL, AERL, Config, Counters, MDTS, MQES, SUBSYSTEM_VENDOR_ID, VENDOR_ID};

pub const IDENTIFY_LEN: usize = 4096;
/// Warning composite temperature threshold, Kelvin (70 °C); also the default over-threshold.
pub const WCTEMP: u16 = 343;
const CCTEMP: u16 = 358;
/// What SMART reports as the composite temperature: a steady 40 °C.
const TEMPERATURE: u16 = 313;
const FIRMWARE: &[u8; 8] = b"janus1  ";

pub const LOG_ERROR: u8 = 0x01;
pub const LOG_SMART: u8 = 0x02;
pub const LOG_FIRMWARE: u8 = 0x03;
/// ELPE = 0: one error information entry.
pub const ERROR_LOG_LEN: usize = 64;
pub const SMART_LOG_LEN: usize = 512;
pub const FIRMWARE_LOG_LEN: usize = 512;

fn put(buf: &mut [u8], at: usize, bytes: &[u8]) {
    if let Some(dst) = buf.get_mut(at..at + bytes.len()) {
        dst.copy_from_slice(bytes);
    }
}

pub fn controller(buf: &mut [u8], cfg: &Config, cntlid: u16) {
    put(buf, 0, &VENDOR_ID.to_le_bytes());
    put(buf, 2, &SUBSYSTEM_VENDOR_ID.to_le_bytes());
    put(buf, 4, &cfg.serial);
    put(buf, 24, &cfg.model);
    put(buf, 64, FIRMWARE);
    put(buf, 72, &[6]); // RAB
    put(buf, 77, &[MDTS]);
    put(buf, 78, &cntlid.to_le_bytes());
    put(buf, 80, &super::regs::VS_VALUE.to_le_bytes());
    put(buf, 111, &[1]); // CNTRLTYPE: an I/O controller
    // OACS = 0: no Format, Security, Firmware, Namespace Management or Doorbell Buffer.
    put(buf, 258, &[ACL, AERL]);
    put(buf, 260, &[0x03]); // FRMW: one slot, read-only
    put(buf, 261, &[0]); // LPA: no per-namespace SMART, no Commands Supported log
    put(buf, 266, &WCTEMP.to_le_bytes());
    put(buf, 268, &CCTEMP.to_le_bytes());
    put(buf, 512, &[0x66, 0x44]); // SQES, CQES: exactly 64 and 16 bytes
    put(buf, 514, &(MQES + 1).to_le_bytes()); // MAXCMD
    put(buf, 516, &1u32.to_le_bytes()); // NN
    put(buf, 520, &(1u16 << 3).to_le_bytes()); // ONCS: Write Zeroes
    // VWC: a volatile write cache, and Flush to NSID FFFFFFFFh flushes it all.
    put(buf, 525, &[0x07]);
    // SGLS = 0: PRPs only. Power state 0: 25 W max, no latencies.
    put(buf, 2048, &2500u16.to_le_bytes());
}

pub fn namespace(buf: &mut [u8], cfg: &Config) {
    let size = cfg.sectors.to_le_bytes();
    put(buf, 0, &size); // NSZE
    put(buf, 8, &size); // NCAP
    put(buf, 16, &size); // NUSE
    put(buf, 25, &[0]); // NLBAF: one format
    put(buf, 26, &[0]); // FLBAS: format 0, no metadata
    put(buf, 99, &[u8::from(cfg.read_only)]); // NSATTR: write protected
    put(buf, 104, &nguid(cfg));
    // LBA format 0: no metadata, 2^9 bytes, best performance.
    put(buf, 128, &(9u32 << 16).to_le_bytes());
}

/// Active namespaces above `after`: namespace 1, if `after` is below it.
pub fn active_list(buf: &mut [u8], after: u32) {
    if after < 1 {
        put(buf, 0, &1u32.to_le_bytes());
    }
}

/// One descriptor: the NGUID (type 2, 16 bytes), then the zero terminator.
pub fn descriptors(buf: &mut [u8], cfg: &Config) {
    put(buf, 0, &[2, 16, 0, 0]);
    put(buf, 4, &nguid(cfg));
}

/// A stable namespace GUID from the disk's serial and model (FNV-1a, twice), so a guest sees
/// the same identifier on every boot.
fn nguid(cfg: &Config) -> [u8; 16] {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut out = [0u8; 16];
    for half in out.chunks_exact_mut(8) {
        for &b in cfg.serial.iter().chain(cfg.model.iter()) {
            h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
        half.copy_from_slice(&h.to_le_bytes());
    }
    out
}

/// A log page into `buf`, or `None` for one the controller does not keep. Returns its length.
pub fn log(buf: &mut [u8], lid: u8, cfg: &Config, counters: &Counters) -> Option<usize> {
    match lid {
        LOG_ERROR => Some(ERROR_LOG_LEN),
        LOG_SMART => {
            // Critical warning bit 3: the medium is read-only.
            put(buf, 0, &[u8::from(cfg.read_only) << 3]);
            put(buf, 1, &TEMPERATURE.to_le_bytes());
            put(buf, 3, &[100, 10, 0]); // available spare, its threshold, percentage used
            // Data units are thousands of 512-byte units, rounded up.
            put(
                buf,
                32,
                &u128::from(counters.sectors_read.div_ceil(1000)).to_le_bytes(),
            );
            put(
                buf,
                48,
                &u128::from(counters.sectors_written.div_ceil(1000)).to_le_bytes(),
            );
            put(buf, 64, &u128::from(counters.reads).to_le_bytes());
            put(buf, 80, &u128::from(counters.writes).to_le_bytes());
            Some(SMART_LOG_LEN)
        }
        LOG_FIRMWARE => {
            put(buf, 0, &[1]); // AFI: slot 1 active
            put(buf, 8, FIRMWARE);
            Some(FIRMWARE_LOG_LEN)
        }
        _ => None,
    }
}
