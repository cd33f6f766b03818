//! The VMBus host of one partition: version negotiation, the channel offers (one storvsc SCSI
//! controller per manifest disk), GPADLs, opening and closing channels, and serving each open
//! channel's ring when the guest signals it.
//!
//! There is no root partition: the hypervisor is the other end of every channel. Messages to
//! the guest wait in a bounded outbox until the SynIC slot is free (the guest's EOM); a guest
//! that floods messages gets `HV_STATUS_INSUFFICIENT_BUFFERS` from HvPostMessage once the
//! outbox is full, as it would from Hyper-V. Anything out of order is answered with a failure
//! status or ignored (as Hyper-V ignores it), never trusted.

pub mod gpadl;
pub mod ic;
pub mod ring;
mod serve;
pub mod wire;

use crate::status::HvStatus;
use crate::storvsc;
use ring::{Broken, DESCRIPTOR, Descriptor, Ring};
use serve::{Rings, put_packet, serve_ic, serve_rings};
use virt::GuestMemory;
use virt::block::DiskInfo;
use virt::personality::{Host, ShutdownKind};
use wire::{Out, msg, u32_at};

/// Disks one partition is offered (a SCSI controller each); the manifest allows as many.
pub const MAX_DISKS: usize = 4;
/// The disks' channels and the shutdown service's.
pub const MAX_CHANNELS: usize = MAX_DISKS + 1;
/// Messages waiting for the guest: a whole enumeration (offers and the end marker) and then
/// some.
pub const OUTBOX: usize = 10;
/// Packets served per signal: a guest whose other vCPUs keep queueing must not hold the
/// signalling vCPU in the hypervisor for ever; the signal is retried for the rest.
pub const BUDGET: u32 = 64;
/// A channel's signalling connection id is this plus its relid.
const CONNECTION_BASE: u32 = 0x1_0000;
/// The largest packet a channel takes from the guest: a storvsc request with the largest
/// transfer (512 KiB, 129 page numbers) is 1,128 bytes.
const MAX_PACKET: usize = 1280;
const _: () = assert!(crate::storvsc::MAX_REQUEST <= MAX_PACKET);

/// The storvsc (synthetic SCSI controller) interface type, as stored in the offer.
pub const STORVSC_TYPE: [u8; 16] = [
    0xd9, 0x63, 0x61, 0xba, 0xa1, 0x04, 0x29, 0x4d, 0xb6, 0x05, 0x72, 0xe2, 0xff, 0xb1, 0xdc, 0x7f,
];

/// A controller's instance GUID: fixed but for the disk's index, so that the guest sees the
/// same device on every boot.
pub fn instance_guid(disk: u32) -> [u8; 16] {
    let mut g = [
        0x4a, 0x61, 0x6e, 0x75, 0x73, 0x00, 0x56, 0x4d, 0x80, 0x42, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00,
    ];
    g[12..16].copy_from_slice(&disk.to_be_bytes());
    g
}

/// Where the host's messages go: the VP and SINT the guest named in INITIATE_CONTACT. It
/// outlives the connection, so that a refusal and UNLOAD's answer still arrive.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Route {
    pub vp: u32,
    pub sint: u8,
}

#[derive(Clone, Debug)]
pub struct Open {
    pub gpadl: u32,
    pub target_vp: u32,
    /// First page of the guest's incoming ring in the GPADL.
    pub(super) in_page: usize,
    /// The host's read index of the guest's outgoing ring.
    pub(super) out_read: u32,
    /// The host's write index of the guest's incoming ring.
    pub(super) in_write: u32,
    pub session: storvsc::Session,
    pub ic: ic::Ic,
    /// Served up to the budget; the rest waits for the retried signal.
    pub more: bool,
    /// The guest broke a ring; nothing more is served on this channel until it is reopened.
    pub broken: bool,
}

/// What a channel offers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Service {
    /// A synthetic SCSI controller with the VM's disk `disk` at LUN 0.
    Storage { disk: u32, info: DiskInfo },
    /// The shutdown integration component.
    Shutdown,
}

#[derive(Clone, Debug)]
pub struct Channel {
    pub relid: u32,
    pub service: Service,
    pub open: Option<Open>,
}

impl Channel {
    pub fn connection_id(&self) -> u32 {
        CONNECTION_BASE + self.relid
    }
}

/// What serving a channel did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Served {
    /// Interrupt this VP for the channel (relid bit in its SIEF).
    pub signal: Option<u32>,
    /// The budget ran out; call again.
    pub more: bool,
}

#[derive(Default)]
pub struct Vmbus {
    /// The agreed protocol version, once there is one.
    pub version: Option<u32>,
    pub route: Option<Route>,
    pub channels: heapless::Vec<Channel, MAX_CHANNELS>,
    pub gpadls: gpadl::Table,
    pub outbox: heapless::Deque<Out, OUTBOX>,
    /// Channels to interrupt for packets the host queued on its own: (VP, relid).
    pub signals: heapless::Vec<(u32, u32), MAX_CHANNELS>,
    /// Channels opened by the last messages, for [`Vmbus::after_post`].
    opened: heapless::Vec<u32, MAX_CHANNELS>,
    next_trans: u64,
    vcpus: u32,
}

impl Vmbus {
    /// A bus offering one SCSI controller per disk the host has for this VM, then the
    /// shutdown service.
    pub fn new(host: &dyn Host) -> Vmbus {
        let mut v = Vmbus {
            vcpus: host.vcpu_count(),
            ..Vmbus::default()
        };
        let disks = (0..MAX_DISKS as u32)
            .filter_map(|disk| host.disk(disk).map(|info| Service::Storage { disk, info }));
        for (i, service) in disks.chain(core::iter::once(Service::Shutdown)).enumerate() {
            let _ = v.channels.push(Channel {
                relid: i as u32 + 1,
                service,
                open: None,
            });
        }
        v
    }

    fn channel(&mut self, relid: u32) -> Option<&mut Channel> {
        self.channels.iter_mut().find(|c| c.relid == relid)
    }

    fn send(&mut self, m: Out) -> Result<(), HvStatus> {
        self.outbox
            .push_back(m)
            .map_err(|_| HvStatus::InsufficientBuffers)
    }

    /// Forgets every channel's state and every GPADL (UNLOAD, or a new INITIATE_CONTACT).
    fn reset(&mut self) {
        for c in self.channels.iter_mut() {
            c.open = None;
        }
        self.gpadls = gpadl::Table::default();
        self.version = None;
    }

    /// HvPostMessage to a VMBus connection: `payload` is the guest's copy.
    pub fn post(&mut self, connection: u32, payload: &[u8], ram: u64) -> Result<(), HvStatus> {
        if connection != wire::MESSAGE_CONNECTION_ID && connection != wire::MESSAGE_CONNECTION_ID_4
        {
            return Err(HvStatus::InvalidConnectionId);
        }
        // Room for the worst answer (an enumeration) before anything changes: a full outbox
        // is the guest's signal to retry, and nothing is half done.
        if self.outbox.len() + self.channels.len() + 1 > OUTBOX {
            return Err(HvStatus::InsufficientBuffers);
        }
        let Some(kind) = u32_at(payload, 0) else {
            return Ok(());
        };
        if kind == msg::INITIATE_CONTACT {
            return self.initiate_contact(payload);
        }
        // Until a version is agreed the host listens for nothing else.
        let Some(version) = self.version else {
            return Ok(());
        };
        match kind {
            msg::REQUESTOFFERS => {
                for i in 0..self.channels.len() {
                    let m = offer(&self.channels[i]);
                    self.send(m)?;
                }
                self.send(Out::new(msg::ALLOFFERS_DELIVERED, wire::HEADER))
            }
            msg::GPADL_HEADER => {
                let known =
                    u32_at(payload, 8).is_some_and(|r| self.channels.iter().any(|c| c.relid == r));
                let step = self.gpadls.header(payload, known, ram);
                self.gpadl_step(step)
            }
            msg::GPADL_BODY => {
                let step = self.gpadls.body(payload, ram);
                self.gpadl_step(step)
            }
            msg::GPADL_TEARDOWN => {
                let (Some(relid), Some(id)) = (u32_at(payload, 8), u32_at(payload, 12)) else {
                    return Ok(());
                };
                // A GPADL still under an open ring stops that ring first: the pages are the
                // guest's to reuse once it hears TORNDOWN.
                for c in self.channels.iter_mut() {
                    if c.open.as_ref().is_some_and(|o| o.gpadl == id) {
                        c.open = None;
                    }
                }
                if self.gpadls.get(id).is_some_and(|g| g.relid == relid) && self.gpadls.remove(id) {
                    let mut m = Out::new(msg::GPADL_TORNDOWN, wire::GPADL_TORNDOWN_LEN);
                    m.put_u32(8, id);
                    self.send(m)?;
                }
                Ok(())
            }
            msg::OPENCHANNEL => self.open(payload),
            msg::CLOSECHANNEL => {
                if let Some(c) = u32_at(payload, 8).and_then(|r| self.channel(r)) {
                    c.open = None;
                }
                Ok(())
            }
            msg::MODIFYCHANNEL => {
                let (Some(relid), Some(vp)) = (u32_at(payload, 8), u32_at(payload, 12)) else {
                    return Ok(());
                };
                let vcpus = self.vcpus;
                let status = match self.channel(relid).and_then(|c| c.open.as_mut()) {
                    Some(o) if vp < vcpus => {
                        o.target_vp = vp;
                        wire::STATUS_SUCCESS
                    }
                    _ => wire::STATUS_INVALID_PARAMETER,
                };
                if version >= wire::version::WIN10_V5_3 {
                    let mut m = Out::new(msg::MODIFYCHANNEL_RESPONSE, wire::MODIFY_RESPONSE_LEN);
                    m.put_u32(8, relid);
                    m.put_u32(12, status);
                    self.send(m)?;
                }
                Ok(())
            }
            msg::UNLOAD => {
                self.reset();
                self.outbox.clear();
                self.send(Out::new(msg::UNLOAD_RESPONSE, wire::HEADER))
            }
            _ => Ok(()),
        }
    }

    /// INITIATE_CONTACT `{ hdr, version, target_vcpu, interrupt_page | msg_sint, monitor
    /// pages }`: from 5.0 the guest names the SINT, before it the SINT is fixed.
    fn initiate_contact(&mut self, m: &[u8]) -> Result<(), HvStatus> {
        let (Some(version), Some(vp), Some(page)) =
            (u32_at(m, 8), u32_at(m, 12), wire::u64_at(m, 16))
        else {
            return Ok(());
        };
        // A guest that connects again (kexec without UNLOAD) starts from nothing.
        self.reset();
        self.outbox.clear();
        let sint = if version >= wire::version::WIN10_V5 {
            page as u8
        } else {
            wire::MESSAGE_SINT
        };
        let route_ok = vp < self.vcpus && usize::from(sint) < crate::synic::SINT_COUNT;
        if !route_ok {
            // Nowhere to answer: the guest waits, as it would for a host that is not there.
            self.route = None;
            return Ok(());
        }
        self.route = Some(Route { vp, sint });
        let mut r = Out::new(msg::VERSION_RESPONSE, wire::VERSION_RESPONSE_LEN);
        if wire::version::SUPPORTED.contains(&version) {
            r.put_u8(8, 1);
            r.put_u32(12, wire::MESSAGE_CONNECTION_ID_4);
            self.version = Some(version);
        }
        self.send(r)
    }

    fn gpadl_step(&mut self, step: gpadl::Step) -> Result<(), HvStatus> {
        if let gpadl::Step::Created { id, relid, status } = step {
            let mut m = Out::new(msg::GPADL_CREATED, wire::GPADL_CREATED_LEN);
            m.put_u32(8, relid);
            m.put_u32(12, id);
            m.put_u32(16, status);
            self.send(m)?;
        }
        Ok(())
    }

    /// OPENCHANNEL `{ hdr, relid, openid, gpadl, target_vp, downstream_page_offset, user[120] }`.
    fn open(&mut self, m: &[u8]) -> Result<(), HvStatus> {
        let fields = (
            u32_at(m, 8),
            u32_at(m, 12),
            u32_at(m, 16),
            u32_at(m, 20),
            u32_at(m, 24),
        );
        let (Some(relid), Some(openid), Some(gpadl), Some(target_vp), Some(in_page)) = fields
        else {
            return Ok(());
        };
        let vcpus = self.vcpus;
        let ring_pages = self
            .gpadls
            .get(gpadl)
            .filter(|g| g.complete() && g.relid == relid)
            .map(|g| g.pages.len());
        let gpadl_busy = self
            .channels
            .iter()
            .any(|c| c.open.as_ref().is_some_and(|o| o.gpadl == gpadl));
        let status = match (self.channel(relid), ring_pages) {
            (Some(c), Some(pages))
                if c.open.is_none()
                    && !gpadl_busy
                    && target_vp < vcpus
                    && in_page >= 2
                    && (in_page as usize) + 2 <= pages =>
            {
                c.open = Some(Open {
                    gpadl,
                    target_vp,
                    in_page: in_page as usize,
                    out_read: 0,
                    in_write: 0,
                    session: storvsc::Session::default(),
                    ic: ic::Ic::default(),
                    more: false,
                    broken: false,
                });
                wire::STATUS_SUCCESS
            }
            (None, _) => return Ok(()),
            _ => wire::STATUS_UNSUCCESSFUL,
        };
        let mut r = Out::new(msg::OPENCHANNEL_RESULT, wire::OPEN_RESULT_LEN);
        r.put_u32(8, relid);
        r.put_u32(12, openid);
        r.put_u32(16, status);
        self.send(r)?;
        if status == wire::STATUS_SUCCESS {
            self.opened.push(relid).ok();
        }
        Ok(())
    }

    /// Work that follows an OPENCHANNEL the host answered: the shutdown service speaks
    /// first, with its versions. Needs guest memory, so the caller runs it after `post`.
    pub fn after_post(&mut self, mem: &dyn GuestMemory) {
        while let Some(relid) = self.opened.pop() {
            let Some(at) = self.channels.iter().position(|c| c.relid == relid) else {
                continue;
            };
            if self.channels[at].service != Service::Shutdown {
                continue;
            }
            if self.send_packet(at, &ic::negotiate(), mem)
                && let Some(o) = self.channels[at].open.as_mut()
            {
                o.ic.offered = true;
            }
        }
    }

    /// Queues a host-initiated in-band packet on channel `at`'s incoming ring and notes the
    /// channel for an interrupt; false if the channel is not open or the ring has no room.
    fn send_packet(&mut self, at: usize, payload: &[u8], mem: &dyn GuestMemory) -> bool {
        let relid = self.channels[at].relid;
        let Some(open) = self.channels[at].open.as_mut() else {
            return false;
        };
        let Some(g) = self.gpadls.get(open.gpadl) else {
            return false;
        };
        let inc = Ring {
            pages: g.pages.get(open.in_page..).unwrap_or(&[]),
        };
        self.next_trans = self.next_trans.wrapping_add(1);
        let d = Descriptor {
            kind: ring::packet::DATA_INBAND,
            offset: DESCRIPTOR,
            len: (DESCRIPTOR + payload.len()).div_ceil(8) * 8,
            flags: 0,
            trans_id: self.next_trans,
        };
        match put_packet(&inc, &mut open.in_write, &d, payload, mem) {
            Ok(true) => {
                let _ = self.signals.push((open.target_vp, relid));
                true
            }
            Ok(false) => false,
            Err(Broken) => {
                open.broken = true;
                false
            }
        }
    }

    /// The host asks the guest to shut down through the shutdown service. False when the
    /// guest has not opened it (its driver is not loaded): there is no other way to ask.
    pub fn request_shutdown(&mut self, kind: ShutdownKind, mem: &dyn GuestMemory) -> bool {
        let Some(at) = self
            .channels
            .iter()
            .position(|c| c.service == Service::Shutdown && c.open.is_some())
        else {
            return false;
        };
        let relid = self.channels[at].relid;
        let (negotiated, vp) = match self.channels[at].open.as_mut() {
            Some(o) if !o.broken => {
                o.ic.pending = Some(kind);
                (o.ic.negotiated, o.target_vp)
            }
            _ => return false,
        };
        if negotiated {
            self.flush_shutdown(at, mem);
        } else {
            // The negotiation request may have gone unnoticed (a guest that took the
            // interrupt before its handler was ready): interrupt again.
            let _ = self.signals.push((vp, relid));
        }
        true
    }

    fn flush_shutdown(&mut self, at: usize, mem: &dyn GuestMemory) {
        let pending = self.channels[at]
            .open
            .as_ref()
            .filter(|o| o.ic.negotiated)
            .and_then(|o| o.ic.pending);
        if let Some(kind) = pending
            && self.send_packet(at, &ic::shutdown(kind), mem)
            && let Some(o) = self.channels[at].open.as_mut()
        {
            o.ic.pending = None;
        }
    }

    /// The channel a HvSignalEvent connection id names.
    pub fn by_connection(&self, connection: u32) -> Option<u32> {
        self.channels
            .iter()
            .find(|c| c.connection_id() == connection)
            .map(|c| c.relid)
    }

    /// Serves what the guest queued on `relid`'s ring, up to [`BUDGET`] packets.
    pub fn serve(&mut self, relid: u32, mem: &dyn GuestMemory, host: &mut dyn Host) -> Served {
        let Some(at) = self.channels.iter().position(|c| c.relid == relid) else {
            return Served::default();
        };
        let service = self.channels[at].service;
        let Some(open) = self.channels[at].open.as_mut() else {
            return Served::default();
        };
        if open.broken {
            return Served::default();
        }
        let Some(g) = self.gpadls.get(open.gpadl) else {
            open.broken = true;
            return Served::default();
        };
        let (out_pages, in_pages) = g.pages.split_at(open.in_page.min(g.pages.len()));
        let rings = Rings {
            out: Ring { pages: out_pages },
            inc: Ring { pages: in_pages },
        };
        let served = match service {
            Service::Storage { disk, info } => {
                serve_rings(open, &rings, &storvsc::Target { disk, info }, mem, host)
            }
            Service::Shutdown => serve_ic(open, &rings, mem),
        };
        match served {
            Ok(s) => {
                open.more = s.more;
                if service == Service::Shutdown {
                    self.flush_shutdown(at, mem);
                }
                s
            }
            Err(Broken) => {
                open.broken = true;
                Served::default()
            }
        }
    }
}

/// OFFERCHANNEL for `c`: a SCSI controller, no monitored notification (so the guest signals
/// with HvSignalEvent), a dedicated interrupt (its own SIEF bit).
fn offer(c: &Channel) -> Out {
    let mut m = Out::new(msg::OFFERCHANNEL, wire::OFFER_LEN);
    let (kind, instance) = match c.service {
        Service::Storage { disk, .. } => (STORVSC_TYPE, instance_guid(disk)),
        Service::Shutdown => (ic::SHUTDOWN_TYPE, ic::SHUTDOWN_INSTANCE),
    };
    m.put(8, &kind);
    m.put(24, &instance);
    // chn_flags, mmio_megabytes, user_def[120], sub_channel_index: all zero.
    m.put_u32(184, c.relid);
    m.put_u8(188, 0);
    m.put_u8(189, 0);
    m.put_u16(190, 1);
    m.put_u32(192, c.connection_id());
    m
}

#[cfg(test)]
mod tests;
