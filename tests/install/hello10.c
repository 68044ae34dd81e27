#include <microvm.h>
#include <stdio.h>
int main(int argc, char **argv) {
	microvm *vm; microvm_exit ex = MICROVM_EXIT_INIT;
	if (argc != 2 || microvm_create(&vm) < 0) return 2;
	if (microvm_set_kernel(vm, argv[1], NULL) < 0 || microvm_set_console(vm, -1, 1) < 0 ||
	    microvm_start(vm) < 0) { fprintf(stderr, "%s\n", microvm_last_error(vm)); return 1; }
	microvm_wait(vm, -1, &ex); microvm_destroy(vm);
	return ex.reason == MICROVM_EXIT_RESET ? 0 : 1;
}
