//! The hand-off from janus-boot, reduced to what the kernel uses. hermit-entry's types stop
//! here so the rest of the kernel does not depend on them.

use core::ops::Range;
use hermit_entry::boot_info::{BootInfo, PlatformInfo};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BootContext {
    pub cmdline: &'static str,
    pub multiboot_info: u64,
    pub kernel_image: Range<u64>,
    pub top_of_ram: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BootInfoError {
    /// Janus boots through janus-boot's multiboot path only.
    NotMultiboot,
    EmptyKernelImage,
}

impl core::fmt::Display for BootInfoError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            BootInfoError::NotMultiboot => {
                f.write_str("the loader did not pass multiboot information (use janus-boot)")
            }
            BootInfoError::EmptyKernelImage => {
                f.write_str("the loader reported an empty kernel image")
            }
        }
    }
}

impl BootContext {
    pub fn from_boot_info(info: &BootInfo) -> Result<Self, BootInfoError> {
        let PlatformInfo::Multiboot {
            command_line,
            multiboot_info_addr,
        } = info.platform_info
        else {
            return Err(BootInfoError::NotMultiboot);
        };
        let kernel_image = info.load_info.kernel_image_addr_range.clone();
        if kernel_image.is_empty() {
            return Err(BootInfoError::EmptyKernelImage);
        }
        Ok(Self {
            cmdline: command_line.unwrap_or(""),
            multiboot_info: multiboot_info_addr.get(),
            kernel_image,
            top_of_ram: info.hardware_info.phys_addr_range.end,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::num::{NonZeroU16, NonZeroU64};
    use hermit_entry::boot_info::{HardwareInfo, LoadInfo, RawBootInfo};

    fn loader_side(platform_info: PlatformInfo) -> RawBootInfo {
        RawBootInfo::from(BootInfo {
            hardware_info: HardwareInfo {
                phys_addr_range: 0..0x8000_0000,
                serial_port_base: NonZeroU16::new(0x3F8),
                device_tree: None,
            },
            load_info: LoadInfo {
                kernel_image_addr_range: 0x60_0000..0x7a_3000,
                tls_info: None,
            },
            platform_info,
        })
    }

    #[test]
    fn multiboot_hand_off_survives_the_raw_form() {
        let raw = loader_side(PlatformInfo::Multiboot {
            command_line: Some("janus.selftest=panic"),
            multiboot_info_addr: NonZeroU64::new(0x9500).unwrap(),
        });
        let ctx = BootContext::from_boot_info(&BootInfo::from(raw)).unwrap();
        assert_eq!(
            ctx,
            BootContext {
                cmdline: "janus.selftest=panic",
                multiboot_info: 0x9500,
                kernel_image: 0x60_0000..0x7a_3000,
                top_of_ram: 0x8000_0000,
            }
        );
    }

    #[test]
    fn other_platforms_are_refused() {
        let raw = loader_side(PlatformInfo::Fdt);
        assert_eq!(
            BootContext::from_boot_info(&BootInfo::from(raw)),
            Err(BootInfoError::NotMultiboot)
        );
    }
}
