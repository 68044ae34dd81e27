/*
 * The boot-image cache (microvm.h, "Process-wide runtime"): a kernel with a
 * large segment is mapped copy-on-write from the process's copy of the
 * file. What the guest finds in RAM, what a snapshot and a fork keep, that
 * VMs do not see each other's writes, that a rewritten file is copied
 * afresh, the cache's size limit, and its fds.
 *
 * The kernels are ELF files written here: one 4 MiB segment at 1 MiB of
 * random bytes (so a page from the wrong offset shows), 1 MiB of bss, and
 * at its start a stub that copies the first 4 bytes of the command line
 * into the segment at 2 MiB + (first byte) * 4 KiB, prints 'A' and halts.
 * The segment's file offset is page-aligned, or not (the copy then holds
 * the file shifted so the segment's pages still line up with RAM's).
 */
#include <elf.h>
#include <sys/random.h>

#include "kvm_test.h"

#define SEG_ADDR 0x100000u
#define SEG_FILESZ (4u << 20)
#define SEG_MEMSZ (SEG_FILESZ + (1u << 20))
#define SLOT_BASE 0x200000u /* guest address of the stub's slot for byte 0 */
#define RAM_MIB 16

struct kernel {
	char path[64];
	uint8_t *seg; /* the segment's bytes as written */
};

static const uint8_t stub[] = {
	0x8b, 0x86, 0x28, 0x02, 0x00, 0x00, /* mov eax, [rsi + 0x228]: cmdline ptr */
	0x8b, 0x00,                         /* mov eax, [rax]: its first 4 bytes */
	0x0f, 0xb6, 0xc8,                   /* movzx ecx, al */
	0xc1, 0xe1, 0x0c,                   /* shl ecx, 12 */
	0x89, 0x81, 0x00, 0x00, 0x20, 0x00, /* mov [rcx + SLOT_BASE], eax */
	0xb0, 'A',                          /* mov al, 'A' */
	0xba, 0xf8, 0x03, 0x00, 0x00,       /* mov edx, 0x3f8 */
	0xee,                               /* out dx, al */
	0xf4,                               /* hlt */
	0xeb, 0xfd,                         /* jmp hlt */
};

/* Write the ELF (segment at file offset @off) with fresh random bytes. */
static void write_kernel(struct kernel *k, uint64_t off)
{
	if (!k->seg) {
		k->seg = malloc(SEG_FILESZ);
		assert_non_null(k->seg);
	}
	for (size_t got = 0; got < SEG_FILESZ;)
		got += (size_t)getrandom(k->seg + got, SEG_FILESZ - got, 0);
	memcpy(k->seg, stub, sizeof(stub));
	Elf64_Ehdr eh = { .e_ident = { ELFMAG0, ELFMAG1, ELFMAG2, ELFMAG3, ELFCLASS64, ELFDATA2LSB,
				       EV_CURRENT },
			  .e_type = ET_EXEC, .e_machine = EM_X86_64, .e_version = EV_CURRENT,
			  .e_entry = SEG_ADDR, .e_phoff = sizeof(Elf64_Ehdr),
			  .e_ehsize = sizeof(Elf64_Ehdr), .e_phentsize = sizeof(Elf64_Phdr),
			  .e_phnum = 1 };
	Elf64_Phdr ph = { .p_type = PT_LOAD, .p_flags = PF_R | PF_W | PF_X, .p_offset = off,
			  .p_vaddr = SEG_ADDR, .p_paddr = SEG_ADDR, .p_filesz = SEG_FILESZ,
			  .p_memsz = SEG_MEMSZ, .p_align = 0x1000 };
	if (!k->path[0])
		snprintf(k->path, sizeof(k->path), "/tmp/microvm-imgcache-XXXXXX");
	int fd = k->path[0] && strstr(k->path, "XXXXXX") ? mkstemp(k->path)
						      : open(k->path, O_WRONLY | O_TRUNC);
	assert_true(fd >= 0);
	assert_int_equal(pwrite(fd, &eh, sizeof(eh), 0), sizeof(eh));
	assert_int_equal(pwrite(fd, &ph, sizeof(ph), sizeof(eh)), sizeof(ph));
	assert_int_equal(pwrite(fd, k->seg, SEG_FILESZ, (off_t)off), SEG_FILESZ);
	close(fd);
}

static void drop_kernel(struct kernel *k)
{
	unlink(k->path);
	free(k->seg);
}

static microvm_runtime_counters cache_stats(void)
{
	microvm_runtime_counters c = MICROVM_RUNTIME_COUNTERS_INIT;
	assert_int_equal(microvm_runtime_stats(&c), 0);
	return c;
}

static void cache_limit(uint32_t mib)
{
	microvm_runtime_config c = MICROVM_RUNTIME_CONFIG_INIT;
	c.image_cache_mib = mib;
	assert_int_equal(microvm_runtime_configure(&c), 0);
}

/* A paused VM of @k that ran its stub with command line @tag. */
static microvm *run_stub(const struct kernel *k, const char *tag)
{
	int out = console_fd();
	microvm *vm = NULL;
	assert_int_equal(microvm_create(&vm), 0);
	assert_int_equal(microvm_set_memory(vm, RAM_MIB), 0);
	assert_int_equal(microvm_set_kernel(vm, k->path, tag), 0);
	assert_int_equal(microvm_set_console(vm, -1, out), 0);
	start_ok(vm);
	assert_int_equal(console_wait_for(out, "A", GUEST_TIMEOUT_MS), 0);
	assert_int_equal(microvm_pause(vm), 0);
	close(out);
	return vm;
}

/* Snapshot @vm into a new directory; its memory file, read whole. */
static uint8_t *memory_of(microvm *vm, char *dir)
{
	strcpy(dir, "/tmp/microvm-imgcache-snap-XXXXXX");
	assert_non_null(mkdtemp(dir));
	rmdir(dir); /* microvm_snapshot makes it */
	int r = microvm_snapshot(vm, dir, 0);
	if (r < 0)
		fail_msg("snapshot: %d %s", r, microvm_last_error(vm));
	char path[128];
	snprintf(path, sizeof(path), "%s/memory", dir);
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	assert_true(fd >= 0);
	uint8_t *m = malloc(RAM_MIB << 20);
	assert_non_null(m);
	assert_int_equal(pread(fd, m, RAM_MIB << 20, 0), RAM_MIB << 20);
	close(fd);
	return m;
}

static void remove_snapshot(const char *dir)
{
	char cmd[160];
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	assert_int_equal(system(cmd), 0);
}

/* RAM @m holds @k's segment with the stub's writes of @tags (first bytes
 * pick the slots) and nothing else changed; its bss is zero. */
static void check_ram(const uint8_t *m, const struct kernel *k, const char *const *tags, int n)
{
	uint8_t *want = malloc(SEG_FILESZ);
	assert_non_null(want);
	memcpy(want, k->seg, SEG_FILESZ);
	for (int i = 0; i < n; i++)
		memcpy(want + SLOT_BASE - SEG_ADDR + (uint8_t)tags[i][0] * 4096u, tags[i], 4);
	for (uint32_t pg = 0; pg < SEG_FILESZ / 4096; pg++)
		if (memcmp(m + SEG_ADDR + pg * 4096, want + pg * 4096, 4096))
			fail_msg("segment page %u (guest 0x%x) differs", pg, SEG_ADDR + pg * 4096);
	for (uint32_t i = SEG_FILESZ; i < SEG_MEMSZ; i++)
		if (m[SEG_ADDR + i])
			fail_msg("bss byte at guest 0x%x is 0x%x", SEG_ADDR + i, m[SEG_ADDR + i]);
	free(want);
}

static void check_vm(microvm *vm, const struct kernel *k, const char *const *tags, int n)
{
	char dir[64];
	uint8_t *m = memory_of(vm, dir);
	check_ram(m, k, tags, n);
	free(m);
	remove_snapshot(dir);
}

/* Two VMs of one kernel (aligned, then shifted by 0x800 in the file): each
 * sees the file's bytes and only its own write; one cached copy serves
 * both; the cache keeps one fd and none is left per VM. */
static void check_two_vms(uint64_t file_off)
{
	struct kernel k = { "", NULL };
	write_kernel(&k, file_off);
	cache_limit(256);
	int fds = kvm_test_fds();
	microvm *a = run_stub(&k, "AAAA");
	microvm *b = run_stub(&k, "BBBB");
	microvm_runtime_counters c = cache_stats();
	assert_int_equal(c.image_cache_files, 1);
	assert_true(c.image_cache_kib >= SEG_FILESZ / 1024);
	const char *ta[] = { "AAAA" }, *tb[] = { "BBBB" };
	check_vm(a, &k, ta, 1);
	check_vm(b, &k, tb, 1);
	microvm_destroy(a);
	microvm_destroy(b);
	assert_int_equal(microvm_teardown_wait(30000), 0);
	assert_int_equal(kvm_test_fds(), fds);
	cache_limit(MICROVM_IMAGE_CACHE_OFF);
	assert_int_equal(cache_stats().image_cache_files, 0);
	drop_kernel(&k);
}

static void test_aligned_segment(void **state)
{
	(void)state;
	check_two_vms(0x1000);
}

static void test_shifted_segment(void **state)
{
	(void)state;
	check_two_vms(0x1800);
}

/* A fork of a VM booted from the cache, and a restore and reset of its
 * snapshot, keep the segment and the write; the child's own write stays
 * its own. */
static void test_fork_restore_reset(void **state)
{
	(void)state;
	struct kernel k = { "", NULL };
	write_kernel(&k, 0x1000);
	cache_limit(256);
	microvm *parent = run_stub(&k, "PPPP");
	microvm *child = NULL;
	microvm_fork_config fc = MICROVM_FORK_CONFIG_INIT;
	fc.flags = MICROVM_FORK_PAUSED;
	int r = microvm_fork(parent, &child, &fc);
	if (r < 0)
		fail_msg("fork: %d %s", r, microvm_last_error(parent));
	const char *tp[] = { "PPPP" };
	check_vm(child, &k, tp, 1);
	check_vm(parent, &k, tp, 1);

	char dir[64];
	uint8_t *m = memory_of(parent, dir);
	free(m);
	microvm *restored = NULL;
	microvm_restore_config rc = MICROVM_RESTORE_CONFIG_INIT;
	rc.flags = MICROVM_RESTORE_PAUSED;
	char err[256] = "";
	if ((r = microvm_restore(&restored, dir, &rc, err, sizeof(err))) < 0)
		fail_msg("restore: %d %s", r, err);
	check_vm(restored, &k, tp, 1);
	assert_int_equal(microvm_reset(parent, MICROVM_RESET_PAUSED), 0);
	check_vm(parent, &k, tp, 1);
	remove_snapshot(dir);
	microvm_destroy(restored);
	microvm_destroy(child);
	microvm_destroy(parent);
	cache_limit(MICROVM_IMAGE_CACHE_OFF);
	drop_kernel(&k);
}

/* The file rewritten in place (same path and inode, new bytes): the next
 * VM gets the new bytes, from a new copy; the VM started before keeps the
 * old ones. */
static void test_rewritten_file(void **state)
{
	(void)state;
	struct kernel k = { "", NULL };
	write_kernel(&k, 0x1000);
	cache_limit(256);
	microvm *before = run_stub(&k, "OOOO");
	uint8_t *old = malloc(SEG_FILESZ);
	assert_non_null(old);
	memcpy(old, k.seg, SEG_FILESZ);
	struct stat st0, st1;
	assert_int_equal(stat(k.path, &st0), 0);
	/* A rewrite is told apart by its ctime (the size is the same): on a
	 * kernel whose file timestamps are coarse (before multigrain
	 * timestamps, Linux 6.13) it may take a tick to change; bounded. */
	for (int i = 0; i < 100; i++) {
		write_kernel(&k, 0x1000);
		assert_int_equal(stat(k.path, &st1), 0);
		if (st1.st_ctim.tv_sec != st0.st_ctim.tv_sec ||
		    st1.st_ctim.tv_nsec != st0.st_ctim.tv_nsec)
			break;
		usleep(1000);
	}
	assert_true(st1.st_ctim.tv_nsec != st0.st_ctim.tv_nsec ||
		    st1.st_ctim.tv_sec != st0.st_ctim.tv_sec);
	assert_int_equal(st1.st_ino, st0.st_ino);
	microvm *after = run_stub(&k, "NNNN");
	const char *to[] = { "OOOO" }, *tn[] = { "NNNN" };
	check_vm(after, &k, tn, 1);
	assert_int_equal(cache_stats().image_cache_files, 2);
	memcpy(k.seg, old, SEG_FILESZ);
	check_vm(before, &k, to, 1);
	free(old);
	microvm_destroy(before);
	microvm_destroy(after);
	cache_limit(MICROVM_IMAGE_CACHE_OFF);
	drop_kernel(&k);
}

/* The limit: a file larger than the cache is read as before (no copy
 * kept); a smaller limit drops the least recently used copy; off drops
 * all. Every VM still gets its bytes. */
static void test_limit(void **state)
{
	(void)state;
	struct kernel k1 = { "", NULL }, k2 = { "", NULL };
	write_kernel(&k1, 0x1000);
	write_kernel(&k2, 0x1000);
	const char *tx[] = { "XXXX" };
	cache_limit(4); /* the files are 4 MiB + 4 KiB */
	microvm *vm = run_stub(&k1, "XXXX");
	assert_int_equal(cache_stats().image_cache_files, 0);
	check_vm(vm, &k1, tx, 1);
	microvm_destroy(vm);

	cache_limit(9); /* room for two */
	microvm_destroy(run_stub(&k1, "XXXX"));
	vm = run_stub(&k2, "XXXX");
	assert_int_equal(cache_stats().image_cache_files, 2);
	cache_limit(5); /* room for one: k1, used least recently, goes */
	microvm_runtime_counters c = cache_stats();
	assert_int_equal(c.image_cache_files, 1);
	assert_true(c.image_cache_kib <= 5 * 1024);
	check_vm(vm, &k2, tx, 1); /* k2's copy, still mapped by vm */
	microvm_destroy(vm);
	vm = run_stub(&k1, "XXXX"); /* copied again, k2 dropped for it */
	assert_int_equal(cache_stats().image_cache_files, 1);
	check_vm(vm, &k1, tx, 1);
	microvm_destroy(vm);
	cache_limit(MICROVM_IMAGE_CACHE_OFF);
	assert_int_equal(cache_stats().image_cache_files, 0);
	assert_int_equal(cache_stats().image_cache_kib, 0);
	drop_kernel(&k1);
	drop_kernel(&k2);
}

/* Out-of-range limits are refused and change nothing. */
static void test_bad_limit(void **state)
{
	(void)state;
	microvm_runtime_config c = MICROVM_RUNTIME_CONFIG_INIT;
	c.image_cache_mib = (1u << 20) + 1;
	assert_int_equal(microvm_runtime_configure(&c), -EINVAL);
	c.image_cache_mib = 0xfffffffeu;
	assert_int_equal(microvm_runtime_configure(&c), -EINVAL);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_aligned_segment),
		cmocka_unit_test(test_shifted_segment),
		cmocka_unit_test(test_fork_restore_reset),
		cmocka_unit_test(test_rewritten_file),
		cmocka_unit_test(test_limit),
		cmocka_unit_test(test_bad_limit),
	};
	return cmocka_run_group_tests(tests, require_kvm, wait_teardown_done);
}
