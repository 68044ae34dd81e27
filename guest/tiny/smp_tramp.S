/*
 * Application-processor start-up code. The BSP copies [ap_tramp, ap_tramp_end)
 * to 0x10000 and sends INIT + SIPI with vector 0x10, so an AP starts here in
 * real mode at CS:IP = 0x1000:0000. It switches straight to long mode using
 * the GDT (0x500) and page tables (0x9000) the VMM built for the BSP.
 */
	.section .rodata
	.code16
	.globl ap_tramp, ap_tramp_end
ap_tramp:
	cli
	mov	%cs, %ax
	mov	%ax, %ds
	lgdtl	(ap_gdtr - ap_tramp)
	mov	$0x20, %eax		/* CR4.PAE */
	mov	%eax, %cr4
	mov	$0x9000, %eax
	mov	%eax, %cr3
	mov	$0xc0000080, %ecx	/* EFER.LME */
	rdmsr
	or	$0x100, %eax
	wrmsr
	mov	$0x80000011, %eax	/* CR0.PG | ET | PE */
	mov	%eax, %cr0
	ljmpl	$0x10, $ap_entry64
ap_gdtr:
	.word	5 * 8 - 1
	.long	0x500
ap_tramp_end:

	.text
	.code64
ap_entry64:
	mov	$0x18, %eax
	mov	%eax, %ds
	mov	%eax, %es
	mov	%eax, %ss
	mov	$1, %eax
	lock xadd %eax, ap_ticket(%rip)	/* eax = 0, 1, ... per AP */
	inc	%eax
	shl	$12, %eax			/* 4 KiB stack per AP */
	lea	ap_stacks(%rip), %rsp
	add	%rax, %rsp
	call	ap_main
1:	cli
	hlt
	jmp	1b

	.bss
	.align	4096
	.globl ap_ticket
ap_ticket:
	.long	0
	.align	4096
ap_stacks:
	.space	4096 * 16
