#!/bin/busybox sh
# /init of the Janus test guest (busybox ash). Its job comes from the kernel command line:
#   janus.face=xen|hyperv|none   which platform checks to run (none: a plain QEMU boot)
#   janus.vcpus=N                how many CPUs the guest must see
#   janus.clockwait=S            seconds between the two clock samples (default 5)
#   janus.stay=S                 after the checks, wait up to S seconds for the host to ask
#                                for a shutdown (a SIGUSR2 from /sbin/poweroff, which the
#                                kernel runs on Xen's control/shutdown and on Hyper-V's
#                                shutdown service, whose hv_utils this loads) before
#                                powering off
#   janus.diskbench=LABEL        load the face's disk driver, mount LABEL and time direct I/O
#                                on a file there: JANUS-BENCH begin/end lines, which the host
#                                stamps (Janus's clock under Janus)
#   janus.disk=LABEL[,LABEL...]  load the face's disk driver; for each label mount the ext4
#                                file system, check hello.bin against hello.sha256, write
#                                new.bin (4 MiB of "janus-disk-line" lines), sync, unmount
#   janus.diskmove=LABEL:STEP    one disk carried from face to face, a step per boot: load
#                                the face's disk driver, mount LABEL, then step 1 writes
#                                a.bin, step 2 checks a.bin and writes b.bin, step 3 checks
#                                both (X.bin: 1 MiB of "janus-move-X" lines); sync, unmount
# The face's disk driver is xen-blkfront on Xen (disks xvda, xvdb, ...) and hv_vmbus with
# hv_storvsc and the SCSI modules on Hyper-V (sda, sdb, ...), loaded from /lib/modules;
# file systems are found by label, so the same disk serves either face.
# Every line a host test reads starts with JANUS- and is written with one write(2) to
# /dev/console, which the kernel's console= option points at hvc0 or ttyS0.
echo JANUS-GUEST-MARKER
# busybox's poweroff (what the kernel's orderly power-off runs) signals init: power off then.
trap 'echo JANUS-GUEST-SHUTDOWN-REQUESTED; poweroff -f' USR2 TERM
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null

face=
vcpus=
clockwait=5
disk=
diskbench=
diskmove=
stay=
for word in $(cat /proc/cmdline); do
    case "$word" in
        janus.face=*) face=${word#janus.face=} ;;
        janus.vcpus=*) vcpus=${word#janus.vcpus=} ;;
        janus.clockwait=*) clockwait=${word#janus.clockwait=} ;;
        janus.disk=*) disk=${word#janus.disk=} ;;
        janus.diskbench=*) diskbench=${word#janus.diskbench=} ;;
        janus.diskmove=*) diskmove=${word#janus.diskmove=} ;;
        janus.stay=*) stay=${word#janus.stay=} ;;
    esac
done

fail=0
# check NAME ok|FAIL DETAIL...
check() {
    name=$1
    status=$2
    shift 2
    [ "$status" = ok ] || { status=FAIL; fail=1; }
    echo "JANUS-CHECK $name $status $*"
}
# expect NAME ACTUAL WANTED
expect() {
    if [ "$2" = "$3" ]; then check "$1" ok "$2"; else check "$1" FAIL "'$2' (want '$3')"; fi
}
# in_log NAME TEXT: the kernel log holds TEXT.
in_log() {
    if dmesg | grep -qF "$2"; then check "$1" ok "$2"; else check "$1" FAIL "no '$2' in the kernel log"; fi
}

# CLOCK_MONOTONIC in ns into $ns (source in $src). The "now at N nsecs" line at the top of
# /proc/timer_list is ktime_get(), which is CLOCK_MONOTONIC, to the nanosecond; the shell's
# own `read` takes it without a fork. busybox 1.35 has no applet that prints the monotonic
# clock (date is CLOCK_REALTIME, /proc/uptime has 10 ms steps), so uptime is only the fallback.
mono_ns() {
    ns=
    if [ -r /proc/timer_list ]; then
        while read -r w1 w2 w3 w4; do
            if [ "$w1 $w2 $w4" = "now at nsecs" ]; then
                ns=$w3
                src=timer_list
                break
            fi
        done </proc/timer_list
    fi
    if [ -z "$ns" ]; then
        read -r up idle </proc/uptime
        # "1${cs} - 100" keeps a leading zero from reading as octal.
        ns=$(( ${up%.*} * 1000000000 + (1${up#*.} - 100) * 10000000 ))
        src=uptime
    fi
}
clock() {
    mono_ns
    printf 'JANUS-CLOCK %s %d.%09d %s\n' "$1" $((ns / 1000000000)) $((ns % 1000000000)) "$src"
}

read -r clocksource </sys/devices/system/clocksource/clocksource0/current_clocksource
clockevents=
for f in /sys/devices/system/clockevents/clockevent[0-9]*/current_device; do
    read -r dev <"$f"
    clockevents="$clockevents${clockevents:+,}$dev"
done
echo "JANUS-INFO face=$face clocksource=$clocksource clockevents=$clockevents kernel=$(uname -r)"

case "$face" in
    xen)
        in_log platform "Booting kernel on Xen PVH"
        expect clocksource "$clocksource" xen
        ;;
    hyperv)
        in_log platform "Hypervisor detected: Microsoft Hyper-V"
        expect clocksource "$clocksource" hyperv_clocksource_tsc_page
        # One per CPU; every one must be the direct-mode synthetic timer.
        others=$(echo "$clockevents" | tr , '\n' | grep -vxF "Hyper-V clockevent" | tr '\n' ' ')
        if [ -n "$clockevents" ] && [ -z "$others" ]; then
            check clockevent ok "$clockevents"
        else
            check clockevent FAIL "'$clockevents' (want Hyper-V clockevent on every CPU)"
        fi
        # ttyS0 is interrupt driven through the IOAPIC: its line in /proc/interrupts counts
        # the interrupts this very output raised.
        serial=$(grep -m1 'ttyS0' /proc/interrupts)
        irqs=0
        for n in $serial; do
            case "$n" in *:) ;; *[!0-9]*) break ;; *) irqs=$((irqs + n)) ;; esac
        done
        if [ "$irqs" -gt 0 ]; then
            check serial-irq ok "$irqs interrupts: $serial"
        else
            check serial-irq FAIL "no ttyS0 interrupts: '$serial'"
        fi
        ;;
    none) ;;
    *) check face FAIL "janus.face='$face' (want xen, hyperv or none)" ;;
esac

# The face's disk driver (the direct QEMU boot's NVMe driver is built in): its modules in
# dependency order (modules.dep of Debian's 6.1 kernels), each load a check of its own; the
# first that fails ends the loading, as everything after it needs it. hv_vmbus binds to
# ACPI's "VMBus" device and connects to the host in its module init; hv_storvsc then takes
# the storage offers, and its disks appear later (find_label waits for them). The generic
# kernel's sd_mod needs T10 protection information and two CRCs that the cloud kernel builds
# in: a module its kernel has no file for is built in.
disk_driver() {
    case "$face" in
        xen) drivers="xen-blkfront" ;;
        hyperv) drivers="crct10dif_common crc-t10dif crc64 crc64-rocksoft t10-pi scsi_common scsi_mod sd_mod scsi_transport_fc hv_vmbus hv_storvsc" ;;
        *) drivers= ;;
    esac
    for driver in $drivers; do
        ko="/lib/modules/$(uname -r)/$driver.ko"
        case "$driver" in
            crct10dif_common | crc-t10dif | crc64 | crc64-rocksoft | t10-pi) [ -f "$ko" ] || continue ;;
        esac
        out=$(insmod "$ko" 2>&1)
        if [ $? = 0 ]; then
            check disk-driver ok "$driver"
        else
            check disk-driver FAIL "$driver: $out"
            break
        fi
    done
}
# find_label LABEL: the device holding that file system into $dev (waiting up to 60 s).
find_label() {
    dev=
    tries=0
    while [ -z "$dev" ] && [ "$tries" -lt 600 ]; do
        dev=$(findfs "LABEL=$1" 2>/dev/null) || dev=
        [ -n "$dev" ] || usleep 100000
        tries=$((tries + 1))
    done
}
# no_fs LABEL: the disk-mount failure, with the block devices the kernel has.
no_fs() {
    check disk-mount FAIL "no ext4 file system labelled '$1' (found '$dev'; block devices: $(echo $(ls /sys/block)))"
}

# The disk test: the host checks the images afterwards; these lines only say how far it got.
if [ -n "$disk" ]; then
    disk_driver
    for label in $(echo "$disk" | tr , ' '); do
        find_label "$label"
        mkdir -p "/mnt/$label"
        if [ -n "$dev" ] && mount -t ext4 "$dev" "/mnt/$label"; then
            check disk-mount ok "$label $dev"
            read -r want rest <"/mnt/$label/hello.sha256"
            set -- $(sha256sum "/mnt/$label/hello.bin")
            expect disk-read "$label $1" "$label $want"
            yes janus-disk-line | head -c 4194304 >"/mnt/$label/new.bin"
            sync
            if umount "/mnt/$label"; then check disk-write ok "$label new.bin"; else check disk-write FAIL "$label: umount"; fi
        else
            no_fs "$label"
        fi
    done
fi

# On plain hardware: how the NVMe controller interrupts (MSI-X, or INTx through the IOAPIC
# as the DSDT's _PRT routes it when the kernel runs with pci=nomsi).
if [ "$face" = none ] && [ -n "$disk" ]; then
    irq=$(grep -m1 'nvme0q0' /proc/interrupts | tr -s ' ')
    case "$irq" in
        *IO-APIC*) check nvme-irq ok "intx:$irq" ;;
        *PCI-MSI*) check nvme-irq ok "msi:$irq" ;;
        *) check nvme-irq FAIL "no nvme0q0 interrupt: '$irq'" ;;
    esac
fi

# The disk that moves between faces: what this step's boot finds and leaves; the host checks
# the image after every boot.
# move_data X: what X.bin holds, 1 MiB of "janus-move-X" lines.
move_data() {
    yes "janus-move-$1" | head -c 1048576
}
if [ -n "$diskmove" ]; then
    label=${diskmove%%:*}
    step=${diskmove#*:}
    case "$step" in
        1) reads= writes=a ;;
        2) reads=a writes=b ;;
        3 | 4) reads="a b" writes= ;;
        *) reads= writes= ; check disk-move FAIL "janus.diskmove='$diskmove' (want LABEL:1 to 4)" ;;
    esac
    disk_driver
    find_label "$label"
    mkdir -p /mnt/move
    if [ -n "$dev" ] && mount -t ext4 "$dev" /mnt/move; then
        check disk-mount ok "$label $dev"
        for f in $reads; do
            set -- $(move_data "$f" | sha256sum)
            want=$1
            if [ -f "/mnt/move/$f.bin" ]; then
                set -- $(sha256sum "/mnt/move/$f.bin")
                expect disk-move-read "$label $f.bin $1" "$label $f.bin $want"
            else
                check disk-move-read FAIL "$label: no $f.bin (an earlier step writes it)"
            fi
        done
        for f in $writes; do
            move_data "$f" >"/mnt/move/$f.bin"
        done
        sync
        if umount /mnt/move; then
            check disk-move ok "$label step $step $dev wrote '$writes' read '$reads'"
        else
            check disk-move FAIL "$label step $step: umount"
        fi
    else
        no_fs "$label"
    fi
fi

# One timed round of 256 random 4 KiB direct requests on $f: $1 is write or read (a write
# round ends with a sync, as a writer's data is not safe before it).
random_4k() {
    echo "JANUS-BENCH begin rand-$1-4K"
    i=0
    while [ $i -lt 256 ]; do
        at=$((RANDOM % 8192))
        if [ "$1" = write ]; then
            dd if=/dev/zero of=$f bs=4k count=1 seek=$at oflag=direct conv=notrunc 2>/dev/null
        else
            dd if=$f of=/dev/null bs=4k count=1 skip=$at iflag=direct 2>/dev/null
        fi
        i=$((i + 1))
    done
    if [ "$1" = write ]; then
        sync
    fi
    echo "JANUS-BENCH end rand-$1-4K 1048576"
}

# The disk benchmark: 32 MiB sequential in 1 MiB requests, 256 random 4 KiB requests, all
# O_DIRECT so that every request reaches the disk. The write that allocates the file runs
# once; the reads five times and the random workloads three, and the host takes each one's
# median, as a single round of some 0.1 s moves by half from one invocation to the next.
if [ -n "$diskbench" ]; then
    disk_driver
    find_label "$diskbench"
    mkdir -p /mnt/bench
    if [ -n "$dev" ] && mount -t ext4 "$dev" /mnt/bench; then
        f=/mnt/bench/bench.bin
        echo "JANUS-BENCH begin seq-write-1M"
        dd if=/dev/zero of=$f bs=1M count=32 oflag=direct conv=fsync 2>/dev/null
        echo "JANUS-BENCH end seq-write-1M 33554432"
        for round in 1 2 3 4 5; do
            echo "JANUS-BENCH begin seq-read-1M"
            dd if=$f of=/dev/null bs=1M iflag=direct 2>/dev/null
            echo "JANUS-BENCH end seq-read-1M 33554432"
        done
        for kind in write read; do
            for round in 1 2 3; do
                random_4k "$kind"
            done
        done
        umount /mnt/bench
        check disk-bench ok "$dev"
    else
        check disk-bench FAIL "no ext4 file system labelled '$diskbench' (found '$dev')"
    fi
fi

# A kernel WARN (a "cut here" block) means the platform told the kernel something
# inconsistent, as a CPUID leaf that disagrees with another once did.
warn=$(dmesg | grep -m1 -A1 "cut here" | tail -n1)
if [ -z "$warn" ]; then check no-kernel-warning ok; else check no-kernel-warning FAIL "$warn"; fi

if [ -n "$vcpus" ]; then
    expect nproc "$(nproc)" "$vcpus"
else
    check nproc FAIL "no janus.vcpus= on the kernel command line"
fi

# Sample 0 only warms the paths (under TCG, code runs slowly the first time it is translated).
# Three samples at each end of the wait: the host may preempt the guest between reading its
# clock and its line reaching the hypervisor, which only ever makes a line late, so the
# harness takes the least late sample of each group. They are 0.2 s apart, so that one such
# delay cannot make all three late (a loaded build machine once held back three back-to-back
# samples by 0.12 s, 12 % of a 1 s wait).
clock 0
clock 1
sleep 0.2
clock 2
sleep 0.2
clock 3
sleep "$clockwait"
clock 4
sleep 0.2
clock 5
sleep 0.2
clock 6

# On Hyper-V a host's shutdown request comes through the shutdown service over VMBus.
if [ -n "$stay" ] && [ "$face" = hyperv ]; then
    for driver in hv_vmbus hv_utils; do
        [ -d "/sys/module/$driver" ] && continue
        out=$(insmod "/lib/modules/$(uname -r)/$driver.ko" 2>&1)
        if [ $? = 0 ]; then check shutdown-driver ok "$driver"; else check shutdown-driver FAIL "$driver: $out"; fi
    done
fi

if [ "$fail" = 0 ]; then echo "JANUS-GUEST-DONE ok"; else echo "JANUS-GUEST-DONE FAIL"; fi
if [ -n "$stay" ]; then
    # In steps, so that the trap runs soon after the signal.
    i=0
    while [ "$i" -lt $((stay * 10)) ]; do
        usleep 100000
        i=$((i + 1))
    done
    echo "JANUS-GUEST-STAYED $stay s without a shutdown request"
fi
poweroff -f
