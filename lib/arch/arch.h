/*
 * The architecture interface: every hook generic code calls. One
 * implementation per lib/arch/<arch>/ (today x86_64); nothing outside that
 * folder knows the architecture. Hooks take plain fds and buffers, not the
 * VM object, except the platform devices, which live in it.
 */
#ifndef MICROVM_ARCH_H
#define MICROVM_ARCH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct arch_platform;
struct bus;
struct dev_host;
struct evloop;
struct guest_mem;
struct kvm_run;
struct st_writer;
struct textbuf;

/* Recorded in snapshots; restore refuses another architecture's. */
extern const char arch_name[];

/* ------------------------------------------------------------- capabilities */

/* Check the KVM capabilities this architecture needs on the /dev/kvm fd.
 * 0 or -ENOTSUP with the missing one named in @err. */
int arch_check_kvm(int kvm_fd, char *err, size_t errlen);

/* ------------------------------------------------------------ memory layout */

/* Guest RAM of @size bytes: the part below arch_ram_low_limit() at GPA 0,
 * the rest from arch_ram_high_base(). Initialises @m (a memfd). 0 or -errno. */
int arch_ram_init(struct guest_mem *m, uint64_t size);
/* The same over @size bytes of the file @fd, private copy-on-write
 * (gm_map_file; @fd adopted). */
int arch_ram_map_file(struct guest_mem *m, int fd, uint64_t size);
uint64_t arch_ram_high_base(void);

/* Where virtio-mmio device @index has its registers and its interrupt. */
uint64_t arch_virtio_mmio_base(uint32_t index);
uint32_t arch_virtio_gsi(uint32_t index);

/* ------------------------------------------------------------------ the VM */

/* After KVM_CREATE_VM and the RAM memslots: interrupt controller, timers
 * (@pit: the legacy interval timer too) and whatever else the VM needs
 * before vCPUs exist. 0 or -errno + message. */
int arch_vm_init(int vm_fd, bool pit, char *err, size_t errlen);

/* Snapshot of VM-wide KVM state (interrupt controllers, timers, @pit as in
 * arch_vm_init; the clock is arch_clock_save's and arch_clock_load's). */
int arch_vm_save(int vm_fd, bool pit, struct st_writer *w, int node, char *err, size_t errlen);
int arch_vm_load(int vm_fd, bool pit, const void *fdt, int node, char *err, size_t errlen);
/* The guest's clocks (kvmclock and the @n vCPUs' TSCs), saved together after
 * the vCPUs and restored together once every vCPU is loaded (@vcpu_nodes:
 * each vCPU's state node); @node is the VM-wide one of arch_vm_save.
 * arch_clock_load sets kvmclock (arch_vm_load does not). */
int arch_clock_save(int vm_fd, const int *vcpu_fds, uint32_t n, struct st_writer *w, int node,
		    char *err, size_t errlen);
/* What loading state learnt about a VM's KVM, kept with the VM so that
 * the next load (a reset) skips the questions: zero = nothing known yet. */
struct arch_known {
	int8_t tsc_attr;     /* KVM_VCPU_TSC_OFFSET: 1 there, -1 not, 0 unknown */
	bool tsc_plain;      /* a guest TSC reads host TSC + offset (no scaling) */
	int8_t sync_regs;    /* registers through kvm_run: 1 yes, -1 no, 0 unknown */
	uint32_t xsave_size; /* bytes of KVM's XSAVE area, 0 unknown */
};
int arch_clock_load(int vm_fd, const int *vcpu_fds, const int *vcpu_nodes, uint32_t n,
		    const void *fdt, int node, struct arch_known *known, char *err,
		    size_t errlen);

/*
 * VM generation ID (ACPI, written with the firmware tables when ACPI is on):
 * put a new random 16-byte ID into @mem, copy it to @id (may be NULL) and
 * signal the guest (an edge on the interrupt its tables route to the
 * notification) through @vm_fd. *@where gets the ID's host address (for
 * dirty tracking). 0 or -errno + message.
 */
#define ARCH_VMGENID_SIZE 16
int arch_vmgenid_renew(int vm_fd, struct guest_mem *mem, uint8_t *id, uint8_t **where,
		       char *err, size_t errlen);

/* --------------------------------------------------------- loading a guest */

/* A virtio-mmio device the firmware tables must describe. */
struct arch_mmio_device {
	uint64_t base, size;
	uint32_t gsi;
};

struct arch_boot {
	const char *kernel_path;
	const char *initrd_path; /* NULL = none */
	const char *cmdline;     /* the user's; devices are added as needed */
	uint32_t vcpus;
	bool acpi;
	uint32_t n_mmio;
	const struct arch_mmio_device *mmio;
};

/* Load the kernel (and initrd) into @mem and write the boot tables; @entry
 * receives what the boot vCPU starts at. 0 or -errno + message. */
int arch_load_guest(struct guest_mem *mem, const struct arch_boot *boot, uint64_t *entry,
		    char *err, size_t errlen);

/* ------------------------------------------------------------------- vCPUs */

/* Data vCPU setup reuses (e.g. the supported CPUID), fetched once per
 * process; unprepare releases what prepare made per VM. */
int arch_vcpu_prepare(int kvm_fd, void **cookie, char *err, size_t errlen);
void arch_vcpu_unprepare(void *cookie);
/* Put vCPU @index of @count into the boot state for @entry, its CPU
 * features fit for a machine with or without the legacy timer (@pit). */
int arch_vcpu_init(int vcpu_fd, void *cookie, uint32_t index, uint32_t count, uint64_t entry,
		   bool pit, char *err, size_t errlen);
/* Snapshot of one vCPU (registers, FPU, MSRs, local APIC, events...). */
int arch_vcpu_save(int kvm_fd, int vcpu_fd, struct st_writer *w, int node, char *err,
		   size_t errlen);
int arch_vcpu_load(int kvm_fd, int vcpu_fd, const void *fdt, int node, char *err,
		   size_t errlen);
/* The same without the CPU model (CPUID), for a vCPU that has run: KVM
 * refuses to change its CPUID then, and an in-place reset keeps it. With
 * @run (the vCPU's mapped kvm_run) the state KVM can take from there at the
 * vCPU's next KVM_RUN (x86: KVM_CAP_SYNC_REGS: registers, special registers,
 * events) is put there instead of set with an ioctl of its own each, which
 * costs a vcpu_load(); arch_vcpu_sync_flush() applies it without running.
 * @known: what earlier loads of the VM learnt (NULL: ask KVM). */
int arch_vcpu_load_state(int kvm_fd, int vcpu_fd, struct kvm_run *run, struct arch_known *known,
			 const void *fdt, int node, char *err, size_t errlen);
/* Apply what arch_vcpu_load_state() left in @run for the next KVM_RUN (if
 * anything), so that state read from KVM before that run (a snapshot of a
 * paused VM) is the loaded state. A parked vCPU may keep it pending: its
 * next KVM_RUN applies it. 0 or -errno. */
int arch_vcpu_sync_flush(int vcpu_fd, struct kvm_run *run);
/* Append where the vCPU is (and, if @code, the instruction bytes there) to
 * the message in @buf, for exit reports. */
void arch_vcpu_describe(int vcpu_fd, const struct guest_mem *mem, bool code, char *buf,
			size_t len);
/* Append a report on vCPU @vcpu_fd, which is not running (microvm_describe):
 * its run state, where it is, its pending events and its interrupt
 * controller's state, as text lines each starting with @indent. */
void arch_vcpu_report(int vcpu_fd, const char *indent, struct textbuf *t);

/* ------------------------------------------------------- platform devices */

/*
 * The devices every VM has (lib/arch/<arch>/platform.c, one table row each):
 * created with the VM on its port bus @pio with its host interface @host
 * (both borrowed for the platform's life; *@out is set even on failure, for
 * platform_destroy, which is NULL-safe), saved and loaded as one subnode of
 * @node each. 0 or -errno (+ message).
 */
int platform_create(const struct dev_host *host, struct bus *pio, struct arch_platform **out);
void platform_destroy(struct arch_platform *p);
/* The console fds (borrowed, -1 = none) go to the platform's console
 * device (x86: the UART); -1/-1 when virtio-console carries the console. */
void platform_set_console(struct arch_platform *p, int in_fd, int out_fd);
/* VM start: watch the console input on the VM's event loop. 0 or -errno. */
int platform_start(struct arch_platform *p, struct evloop *loop);
void platform_save(struct arch_platform *p, struct st_writer *w, int node);
int platform_load(struct arch_platform *p, const void *fdt, int node, char *err, size_t errlen);

#endif
