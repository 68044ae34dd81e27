/* Entry of every tiny payload: 64-bit mode, paging on, RSI = boot_params. */
	.section .text.entry, "ax"
	.code64
	.globl _start
_start:
	cli
	lea	stack_top(%rip), %rsp
	mov	%rsi, %rdi		/* main(boot_params) */
	call	main
	call	tiny_reset		/* main returned: reset */
1:	hlt
	jmp	1b

	.bss
	.align	16
	.space	16384
stack_top:
