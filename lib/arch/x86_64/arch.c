/* The x86_64 implementation of lib/arch/arch.h (the hooks not implemented
 * by the loader, CPU and state files themselves). */
#include "arch/arch.h"

#include <errno.h>
#include <pthread.h>
#include <linux/kvm.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>

#include "arch/x86_64/acpi.h"
#include "arch/x86_64/boot.h"
#include "arch/x86_64/cpu.h"
#include "arch/x86_64/layout.h"
#include "errbuf.h"
#include "memory.h"
#include "microvm.h"

const char arch_name[] = "x86_64";

static const struct gm_layout ram_layout = { MEM_LOW_LIMIT, MEM_HIGH_BASE };

int arch_check_kvm(int kvm_fd, char *err, size_t errlen)
{
	static const struct { int cap; const char *name; } caps[] = {
		{ KVM_CAP_IRQCHIP, "KVM_CAP_IRQCHIP" },
		{ KVM_CAP_SET_TSS_ADDR, "KVM_CAP_SET_TSS_ADDR" },
		{ KVM_CAP_PIT2, "KVM_CAP_PIT2" },
		{ KVM_CAP_EXT_CPUID, "KVM_CAP_EXT_CPUID" },
	};
	for (size_t i = 0; i < sizeof(caps) / sizeof(caps[0]); i++)
		if (ioctl(kvm_fd, KVM_CHECK_EXTENSION, caps[i].cap) <= 0)
			return errbuf_fail(err, errlen, -ENOTSUP, "/dev/kvm lacks %s", caps[i].name);
	return 0;
}

int arch_ram_init(struct guest_mem *m, uint64_t size)
{
	return gm_init(m, size, &ram_layout);
}

int arch_ram_map_file(struct guest_mem *m, int fd, uint64_t size)
{
	return gm_map_file(m, fd, size, &ram_layout);
}

uint64_t arch_ram_high_base(void)
{
	return MEM_HIGH_BASE;
}

uint64_t arch_virtio_mmio_base(uint32_t index)
{
	return VIRTIO_MMIO_BASE + (uint64_t)index * 0x1000;
}

uint32_t arch_virtio_gsi(uint32_t index)
{
	uint32_t gsi = VIRTIO_MMIO_FIRST_GSI + index;
	return gsi == RTC_GSI ? VIRTIO_MMIO_GSI_INSTEAD_OF_RTC : gsi;
}

int arch_vm_init(int vm_fd, bool pit, char *err, size_t errlen)
{
	if (ioctl(vm_fd, KVM_SET_TSS_ADDR, (unsigned long)KVM_TSS_ADDR) < 0)
		return errbuf_fail(err, errlen, -errno, "KVM_SET_TSS_ADDR: %s", strerror(errno));
	uint64_t idmap = KVM_IDENTITY_MAP_ADDR;
	if (ioctl(vm_fd, KVM_SET_IDENTITY_MAP_ADDR, &idmap) < 0)
		return errbuf_fail(err, errlen, -errno, "KVM_SET_IDENTITY_MAP_ADDR: %s",
				   strerror(errno));
	if (ioctl(vm_fd, KVM_CREATE_IRQCHIP, 0) < 0)
		return errbuf_fail(err, errlen, -errno, "KVM_CREATE_IRQCHIP: %s", strerror(errno));
	struct kvm_pit_config pc = { .flags = 0 };
	if (pit && ioctl(vm_fd, KVM_CREATE_PIT2, &pc) < 0)
		return errbuf_fail(err, errlen, -errno, "KVM_CREATE_PIT2: %s", strerror(errno));
	return 0;
}

int arch_vmgenid_renew(int vm_fd, struct guest_mem *mem, uint8_t *id, uint8_t **where,
		       char *err, size_t errlen)
{
	_Static_assert(ARCH_VMGENID_SIZE == ACPI_VMGENID_SIZE, "VM generation ID size");
	uint8_t *p = gm_ptr(mem, ACPI_VMGENID_ADDR, ACPI_VMGENID_SIZE);
	if (!p)
		return errbuf_fail(err, errlen, -EINVAL, "VM generation ID: no RAM at 0x%llx",
				   (unsigned long long)ACPI_VMGENID_ADDR);
	uint8_t fresh[ACPI_VMGENID_SIZE];
	acpi_vmgenid_fill(fresh);
	memcpy(p, fresh, sizeof(fresh));
	if (id)
		memcpy(id, fresh, sizeof(fresh));
	*where = p;
	/* An edge on the GED's interrupt: its _EVT notifies the device. */
	struct kvm_irq_level l = { .irq = ACPI_GED_GSI, .level = 1 };
	if (ioctl(vm_fd, KVM_IRQ_LINE, &l) < 0)
		return errbuf_fail(err, errlen, -errno, "VM generation ID: KVM_IRQ_LINE: %s",
				   strerror(errno));
	l.level = 0;
	if (ioctl(vm_fd, KVM_IRQ_LINE, &l) < 0)
		return errbuf_fail(err, errlen, -errno, "VM generation ID: KVM_IRQ_LINE: %s",
				   strerror(errno));
	return 0;
}

/* The user's command line plus, without ACPI, the virtio-mmio devices (a
 * hardware-reduced ACPI machine has no legacy IRQ numbers, so there they
 * are in the DSDT instead). */
static int full_cmdline(const struct arch_boot *boot, char *buf, size_t len, char *err,
			size_t errlen)
{
	size_t n = (size_t)snprintf(buf, len, "%s", boot->cmdline ? boot->cmdline : "");
	for (uint32_t i = 0; !boot->acpi && i < boot->n_mmio && n < len; i++)
		n += (size_t)snprintf(buf + n, len - n, " virtio_mmio.device=4K@0x%llx:%u",
				      (unsigned long long)boot->mmio[i].base, boot->mmio[i].gsi);
	if (n >= len)
		return errbuf_fail(err, errlen, -E2BIG, "command line with %u virtio device(s) "
				   "exceeds %zu bytes", boot->n_mmio, len - 1);
	return 0;
}

int arch_load_guest(struct guest_mem *mem, const struct arch_boot *boot, uint64_t *entry,
		    char *err, size_t errlen)
{
	char cmdline[MICROVM_MAX_CMDLINE];
	int r = full_cmdline(boot, cmdline, sizeof(cmdline), err, errlen);
	if (r < 0)
		return r;
	if (boot->n_mmio > ACPI_MAX_MMIO_DEVICES)
		return errbuf_fail(err, errlen, -E2BIG, "%u virtio devices, the tables hold %d",
				   boot->n_mmio, ACPI_MAX_MMIO_DEVICES);
	struct boot_info *bi = calloc(1, sizeof(*bi));
	if (!bi)
		return errbuf_fail(err, errlen, -ENOMEM, "out of memory");
	bi->ncpus = boot->vcpus;
	bi->no_acpi = !boot->acpi;
	for (uint32_t i = 0; i < boot->n_mmio; i++)
		bi->mmio[bi->n_mmio++] = (struct acpi_mmio_device){
			boot->mmio[i].base, boot->mmio[i].size, boot->mmio[i].gsi };
	r = boot_load_kernel(mem, boot->kernel_path, bi, err, errlen);
	mem->all_zero = false; /* the loaders below write over what they need */
	if (r == 0 && boot->initrd_path)
		r = boot_load_initrd(mem, boot->initrd_path, bi, err, errlen);
	if (r == 0)
		r = boot_setup_memory(mem, cmdline, bi, err, errlen);
	*entry = bi->entry;
	free(bi);
	return r;
}

/* What vCPU setup asks of KVM: the same for every VM of the process. */
struct cpu_host {
	struct kvm_cpuid2 *supported;
	bool tsc_deadline; /* KVM_CAP_TSC_DEADLINE_TIMER */
};

/* The supported CPUID is the same for every VM of the process: asked once
 * (about 0.1 ms of the start path) and kept. */
int arch_vcpu_prepare(int kvm_fd, void **cookie, char *err, size_t errlen)
{
	static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
	static struct cpu_host host;
	int r = 0;
	pthread_mutex_lock(&lock);
	if (!host.supported) {
		r = x86_supported_cpuid(kvm_fd, &host.supported);
		host.tsc_deadline = ioctl(kvm_fd, KVM_CHECK_EXTENSION, KVM_CAP_TSC_DEADLINE_TIMER) > 0;
	}
	*cookie = &host;
	pthread_mutex_unlock(&lock);
	if (r < 0)
		return errbuf_fail(err, errlen, r, "KVM_GET_SUPPORTED_CPUID: %s", strerror(-r));
	return 0;
}

void arch_vcpu_unprepare(void *cookie)
{
	(void)cookie; /* kept for the process */
}

int arch_vcpu_init(int vcpu_fd, void *cookie, uint32_t index, uint32_t count, uint64_t entry,
		   bool pit, char *err, size_t errlen)
{
	const struct cpu_host *host = cookie;
	/* Without a PIT, Linux needs a local APIC timer it need not calibrate */
	return x86_vcpu_setup(vcpu_fd, index, count, host->supported, !pit && host->tsc_deadline,
			      entry, err, errlen);
}

void arch_vcpu_describe(int vcpu_fd, const struct guest_mem *mem, bool code, char *buf,
			size_t len)
{
	struct kvm_regs regs;
	size_t n = strlen(buf);
	if (ioctl(vcpu_fd, KVM_GET_REGS, &regs) < 0)
		return;
	n += (size_t)snprintf(buf + n, n < len ? len - n : 0, " rip=0x%llx",
			      (unsigned long long)regs.rip);
	struct kvm_translation tr = { .linear_address = regs.rip };
	if (!code || n >= len || ioctl(vcpu_fd, KVM_TRANSLATE, &tr) < 0 || !tr.valid)
		return;
	uint8_t insn[15];
	size_t got = 0;
	for (; got < sizeof(insn); got++)
		if (!gm_read(mem, tr.physical_address + got, &insn[got], 1))
			break;
	if (got == 0)
		return;
	n += (size_t)snprintf(buf + n, len - n, " code:");
	for (size_t i = 0; i < got && n < len; i++)
		n += (size_t)snprintf(buf + n, len - n, " %02x", insn[i]);
}
