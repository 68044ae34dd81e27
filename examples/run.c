/* microvm-run KERNEL INITRD CMD [ARGS...]: boot a Linux guest whose /init is
 * the guest agent, run CMD in it, print its output, exit with its status.
 * The whole embedding, in about ten lines of library calls. */
#include <microvm_agent.h>
#include <stdio.h>

int main(int argc, char **argv)
{
	microvm *vm;
	microvm_vsock_config vsock = MICROVM_VSOCK_CONFIG_INIT;
	microvm_exec_result res = MICROVM_EXEC_RESULT_INIT;
	vsock.guest_cid = 3;
	if (argc < 4 || microvm_create(&vm) < 0)
		return fprintf(stderr, "usage: microvm-run KERNEL INITRD CMD [ARGS...]\n"), 2;
	microvm_set_kernel(vm, argv[1], "console=ttyS0 quiet panic=-1 pci=off");
	microvm_set_initrd(vm, argv[2]);
	microvm_set_vsock(vm, &vsock);
	if (microvm_start(vm) < 0 ||
	    microvm_agent_run(vm, (const char *const *)argv + 3, 120000, &res) < 0)
		return fprintf(stderr, "microvm-run: %s\n", microvm_last_error(vm)), 1;
	fwrite(res.out, 1, res.out_len, stdout);
	fwrite(res.err, 1, res.err_len, stderr);
	microvm_exec_result_free(&res);
	microvm_destroy(vm);
	return res.signal ? 128 + res.signal : res.exit_code;
}
