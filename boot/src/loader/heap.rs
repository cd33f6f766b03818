//! hermit-entry's loader side allocates while parsing the kernel ELF; a small fixed arena in
//! the loader's own .bss is enough and keeps the loader out of the memory it hands on.

use linked_list_allocator::LockedHeap;

const HEAP_SIZE: usize = 2 << 20;

#[global_allocator]
static ALLOCATOR: LockedHeap = LockedHeap::empty();

static ARENA: spin_cell::Arena = spin_cell::Arena::new();

pub fn init() {
    let (ptr, len) = ARENA.take();
    #[expect(unsafe_code)]
    // SAFETY: the arena is a static used by nothing else, taken exactly once.
    unsafe {
        ALLOCATOR.lock().init(ptr, len)
    };
}

mod spin_cell {
    #![expect(unsafe_code)]
    // UNSAFETY: hands out the static arena's pointer once for the allocator to own.
    use core::cell::UnsafeCell;
    use core::sync::atomic::{AtomicBool, Ordering};

    #[repr(align(4096))]
    pub struct Arena {
        taken: AtomicBool,
        bytes: UnsafeCell<[u8; super::HEAP_SIZE]>,
    }

    // SAFETY: the bytes are only reachable through `take`, which succeeds once.
    unsafe impl Sync for Arena {}

    impl Arena {
        pub const fn new() -> Self {
            Self {
                taken: AtomicBool::new(false),
                bytes: UnsafeCell::new([0; super::HEAP_SIZE]),
            }
        }

        pub fn take(&self) -> (*mut u8, usize) {
            assert!(
                !self.taken.swap(true, Ordering::AcqRel),
                "heap arena taken twice"
            );
            (self.bytes.get().cast(), super::HEAP_SIZE)
        }
    }
}
