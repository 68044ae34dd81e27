/*
 * The floor of a VM start: the KVM calls any VMM must make for a tiny
 * guest with the same machine (in-kernel irqchip and PIT, one vCPU,
 * 128 MiB), then KVM_RUN until the guest's first port write. The guest is
 * 9 bytes at 1 MiB entered in 64-bit mode (2 MiB identity page, the page
 * tables written before the run): mov al,'A'; mov edx,0x3f8; out dx,al;
 * hlt. With no_pit set the machine has no PIT (microvm_set_pit(vm, 0)).
 * For bench/density.c, which times it in the same run as the library.
 */
#ifndef MICROVM_BENCH_FLOOR_H
#define MICROVM_BENCH_FLOOR_H

#include <fcntl.h>
#include <stdbool.h>
#include <linux/kvm.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>

#define FLOOR_RAM (128u << 20)
#define FLOOR_PML4 0x9000u
#define FLOOR_ENTRY 0x100000u

struct floor_vm {
	int vm, vcpu;
	uint8_t *ram;
	struct kvm_run *run;
};

static void floor_die(const char *what)
{
	perror(what);
	exit(1);
}

/* /dev/kvm, its supported CPUID and kvm_run size: once, untimed (a VMM
 * asks them once per process too). */
struct floor_host {
	int kvm;
	int run_size;
	struct kvm_cpuid2 *cpuid;
	bool no_pit;
};

static void floor_host_init(struct floor_host *h)
{
	h->no_pit = false;
	h->kvm = open("/dev/kvm", O_RDWR | O_CLOEXEC);
	if (h->kvm < 0)
		floor_die("/dev/kvm");
	h->run_size = ioctl(h->kvm, KVM_GET_VCPU_MMAP_SIZE, 0);
	h->cpuid = calloc(1, sizeof(*h->cpuid) + 256 * sizeof(h->cpuid->entries[0]));
	h->cpuid->nent = 256;
	if (h->run_size <= 0 || ioctl(h->kvm, KVM_GET_SUPPORTED_CPUID, h->cpuid) < 0)
		floor_die("KVM_GET_SUPPORTED_CPUID");
}

static void floor_guest(uint8_t *ram)
{
	static const uint8_t code[] = { 0xb0, 'A', 0xba, 0xf8, 0x03, 0x00, 0x00, 0xee, 0xf4 };
	uint64_t *pml4 = (uint64_t *)(ram + FLOOR_PML4), *pdpt = pml4 + 512, *pd = pdpt + 512;
	pml4[0] = (FLOOR_PML4 + 0x1000) | 3;
	pdpt[0] = (FLOOR_PML4 + 0x2000) | 3;
	pd[0] = 0x83; /* 2 MiB page at 0, present, writable */
	memcpy(ram + FLOOR_ENTRY, code, sizeof(code));
}

static void floor_long_mode(int vcpu)
{
	struct kvm_sregs s;
	if (ioctl(vcpu, KVM_GET_SREGS, &s) < 0)
		floor_die("KVM_GET_SREGS");
	struct kvm_segment cs = { .limit = 0xffffffff, .selector = 0x10, .type = 0xb,
				  .present = 1, .s = 1, .l = 1, .g = 1 };
	struct kvm_segment ds = { .limit = 0xffffffff, .selector = 0x18, .type = 0x3,
				  .present = 1, .db = 1, .s = 1, .g = 1 };
	s.cs = cs;
	s.ds = s.es = s.fs = s.gs = s.ss = ds;
	s.cr0 = 0x80000033ULL;
	s.cr3 = FLOOR_PML4;
	s.cr4 = 0x20;
	s.efer = 0x500;
	struct kvm_regs r = { .rip = FLOOR_ENTRY, .rflags = 2, .rsp = 0x8000 };
	if (ioctl(vcpu, KVM_SET_SREGS, &s) < 0 || ioctl(vcpu, KVM_SET_REGS, &r) < 0)
		floor_die("KVM_SET_SREGS/REGS");
}

/* Build the VM and run it to its first port write. */
static void floor_start(const struct floor_host *h, struct floor_vm *f)
{
	struct kvm_pit_config pc = { .flags = KVM_PIT_SPEAKER_DUMMY };
	uint64_t idmap = 0xfeffc000;
	f->ram = mmap(NULL, FLOOR_RAM, PROT_READ | PROT_WRITE,
		      MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	f->vm = ioctl(h->kvm, KVM_CREATE_VM, 0);
	if (f->ram == MAP_FAILED || f->vm < 0)
		floor_die("KVM_CREATE_VM");
	struct kvm_userspace_memory_region slot = { .memory_size = FLOOR_RAM,
						    .userspace_addr = (uintptr_t)f->ram };
	if (ioctl(f->vm, KVM_SET_USER_MEMORY_REGION, &slot) < 0 ||
	    ioctl(f->vm, KVM_SET_TSS_ADDR, 0xfeffd000) < 0 ||
	    ioctl(f->vm, KVM_SET_IDENTITY_MAP_ADDR, &idmap) < 0 ||
	    ioctl(f->vm, KVM_CREATE_IRQCHIP, 0) < 0 ||
	    (!h->no_pit && ioctl(f->vm, KVM_CREATE_PIT2, &pc) < 0))
		floor_die("VM setup");
	f->vcpu = ioctl(f->vm, KVM_CREATE_VCPU, 0);
	f->run = f->vcpu < 0 ? MAP_FAILED
			     : mmap(NULL, (size_t)h->run_size, PROT_READ | PROT_WRITE, MAP_SHARED,
				    f->vcpu, 0);
	if (f->run == MAP_FAILED || ioctl(f->vcpu, KVM_SET_CPUID2, h->cpuid) < 0)
		floor_die("vCPU setup");
	floor_guest(f->ram);
	floor_long_mode(f->vcpu);
	if (ioctl(f->vcpu, KVM_RUN, 0) < 0 || f->run->exit_reason != KVM_EXIT_IO ||
	    f->run->io.port != 0x3f8)
		floor_die("floor guest: no port write");
}

/* Close everything (blocks for the kernel's teardown of the VM). */
static void floor_destroy(const struct floor_host *h, struct floor_vm *f)
{
	munmap(f->run, (size_t)h->run_size);
	close(f->vcpu);
	close(f->vm);
	munmap(f->ram, FLOOR_RAM);
}

#endif
