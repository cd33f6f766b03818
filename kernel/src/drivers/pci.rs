//! PCI configuration space through the legacy mechanism #1 ports (address at 0xCF8, data at
//! 0xCFC): enough to find a device by class, enable it and read its BARs. Every PC chipset
//! and QEMU's q35 still decode these ports; ECAM would only add the extended space, which
//! the drivers here do not need.

/// Configuration-space offsets the drivers use.
pub const VENDOR_DEVICE: u8 = 0x00;
pub const COMMAND: u8 = 0x04;
pub const CLASS: u8 = 0x08;
pub const HEADER_TYPE: u8 = 0x0C;
pub const BAR0: u8 = 0x10;

/// Command register bits.
pub const CMD_MEMORY: u16 = 1 << 1;
pub const CMD_BUS_MASTER: u16 = 1 << 2;
/// The driver polls; a legacy interrupt line asserted by the device must stay silent.
pub const CMD_INTX_DISABLE: u16 = 1 << 10;

/// Bus, device, function.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Bdf {
    pub bus: u8,
    pub dev: u8,
    pub func: u8,
}

impl core::fmt::Display for Bdf {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "{:02x}:{:02x}.{}", self.bus, self.dev, self.func)
    }
}

impl Bdf {
    /// The value for 0xCF8 that selects dword `offset` (rounded down) of this function.
    pub fn config_address(self, offset: u8) -> u32 {
        (1 << 31)
            | (u32::from(self.bus) << 16)
            | (u32::from(self.dev & 0x1f) << 11)
            | (u32::from(self.func & 0x7) << 8)
            | u32::from(offset & 0xfc)
    }
}

/// Class code, subclass, programming interface from the dword at 0x08.
pub fn class_of(dword: u32) -> (u8, u8, u8) {
    ((dword >> 24) as u8, (dword >> 16) as u8, (dword >> 8) as u8)
}

/// A function at device 0 with this header type implements functions 1–7 too.
pub fn is_multifunction(header_dword: u32) -> bool {
    (header_dword >> 16) & 0x80 != 0
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Bar {
    Memory {
        addr: u64,
        wide: bool,
        prefetchable: bool,
    },
    Io {
        port: u32,
    },
}

/// Decodes a BAR from its dword and the next one (the upper half of a 64-bit BAR).
pub fn decode_bar(lo: u32, hi: u32) -> Bar {
    if lo & 1 == 1 {
        return Bar::Io { port: lo & !0x3 };
    }
    let wide = (lo >> 1) & 0x3 == 0x2;
    let upper = if wide { u64::from(hi) << 32 } else { 0 };
    Bar::Memory {
        addr: upper | u64::from(lo & !0xf),
        wide,
        prefetchable: lo & 0x8 != 0,
    }
}

#[cfg(target_os = "none")]
pub mod config {
    //! The port accesses themselves.
    #![expect(unsafe_code)]
    // UNSAFETY: x86 port I/O to the configuration mechanism's two ports.

    use super::{Bdf, CLASS, HEADER_TYPE, VENDOR_DEVICE, class_of, is_multifunction};
    use spin::Mutex;
    use x86::io::{inl, outl};

    const ADDRESS_PORT: u16 = 0xCF8;
    const DATA_PORT: u16 = 0xCFC;

    /// The address/data pair is one shared piece of state; whoever selects must also read.
    static PORTS: Mutex<()> = Mutex::new(());

    pub fn read32(bdf: Bdf, offset: u8) -> u32 {
        let _g = PORTS.lock();
        // SAFETY: 0xCF8/0xCFC are the configuration ports, owned by this module; the lock
        // keeps the select-then-read pair together.
        unsafe {
            outl(ADDRESS_PORT, bdf.config_address(offset));
            inl(DATA_PORT)
        }
    }

    pub fn write32(bdf: Bdf, offset: u8, value: u32) {
        let _g = PORTS.lock();
        // SAFETY: as in `read32`.
        unsafe {
            outl(ADDRESS_PORT, bdf.config_address(offset));
            outl(DATA_PORT, value)
        }
    }

    /// The first function, in bus/device/function order, with this class triple.
    pub fn find_class(class: u8, subclass: u8, prog_if: u8) -> Option<Bdf> {
        for bus in 0..=255u8 {
            for dev in 0..32u8 {
                for func in 0..8u8 {
                    let bdf = Bdf { bus, dev, func };
                    if read32(bdf, VENDOR_DEVICE) as u16 == 0xffff {
                        if func == 0 {
                            break;
                        }
                        continue;
                    }
                    if class_of(read32(bdf, CLASS)) == (class, subclass, prog_if) {
                        return Some(bdf);
                    }
                    if func == 0 && !is_multifunction(read32(bdf, HEADER_TYPE)) {
                        break;
                    }
                }
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_addresses() {
        let b = Bdf {
            bus: 0,
            dev: 3,
            func: 0,
        };
        assert_eq!(b.config_address(0), 0x8000_1800);
        assert_eq!(b.config_address(0x13), 0x8000_1810, "dword aligned");
        let b = Bdf {
            bus: 0x12,
            dev: 31,
            func: 7,
        };
        assert_eq!(b.config_address(0x3c), 0x8012_ff3c);
        assert_eq!(b.to_string(), "12:1f.7");
    }

    #[test]
    fn classes_and_headers() {
        // An NVMe controller: class 01, subclass 08, interface 02, revision 2.
        assert_eq!(class_of(0x0108_0202), (1, 8, 2));
        assert!(is_multifunction(0x0080_0000));
        assert!(!is_multifunction(0x0000_0000));
    }

    #[test]
    fn decodes_bars() {
        assert_eq!(
            decode_bar(0xfebd_0004, 0),
            Bar::Memory {
                addr: 0xfebd_0000,
                wide: true,
                prefetchable: false
            }
        );
        assert_eq!(
            decode_bar(0x0000_000c, 0x80),
            Bar::Memory {
                addr: 0x80_0000_0000,
                wide: true,
                prefetchable: true
            }
        );
        assert_eq!(
            decode_bar(0xfe00_0000, 0xdead),
            Bar::Memory {
                addr: 0xfe00_0000,
                wide: false,
                prefetchable: false
            },
            "a 32-bit BAR ignores the next dword"
        );
        assert_eq!(decode_bar(0xc041, 0), Bar::Io { port: 0xc040 });
    }
}
