/*
 * rv32_virt.c -- board support for C programs run by tests/beds on
 * `qemu-system-riscv32 -M virt -bios none`, linked with picolibc.
 *
 *   stdout, stderr  the NS16550A UART at 0x10000000 (QEMU's serial0 -> stdout)
 *   stdin           always at end of file
 *   _exit(code)     the SiFive test finisher at 0x100000: QEMU exits with
 *                   `code` (0..255 survive as the process exit status)
 *   traps           print mcause/mepc/mtval on the UART, exit with 125
 *
 * picolibc's crt0 (set sp/gp/tp, copy .data, clear .bss, constructors,
 * main, exit) does the rest.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#define UART0_BASE 0x10000000u
#define UART_THR 0u /* transmit holding register */
#define UART_LSR 5u /* line status register */
#define UART_LSR_THRE 0x20u
#define FINISHER_BASE 0x100000u
#define FINISHER_PASS 0x5555u
#define FINISHER_FAIL 0x3333u

static void uart_putc(char c)
{
    volatile uint8_t *uart = (volatile uint8_t *)UART0_BASE;
    while ((uart[UART_LSR] & UART_LSR_THRE) == 0) {
    }
    uart[UART_THR] = (uint8_t)c;
}

static int bed_putc(char c, FILE *file)
{
    (void)file;
    uart_putc(c);
    return (unsigned char)c;
}

static int bed_getc(FILE *file)
{
    (void)file;
    return EOF;
}

static FILE bed_stdio = FDEV_SETUP_STREAM(bed_putc, bed_getc, NULL, _FDEV_SETUP_RW);
FILE *const stdin = &bed_stdio;
FILE *const stdout = &bed_stdio;
FILE *const stderr = &bed_stdio;

void _exit(int code)
{
    volatile uint32_t *finisher = (volatile uint32_t *)FINISHER_BASE;
    uint32_t status = (uint32_t)code & 0xffffu;
    *finisher = status == 0 ? FINISHER_PASS : (status << 16) | FINISHER_FAIL;
    for (;;) {
    }
}

static void uart_puts(const char *s)
{
    while (*s) {
        uart_putc(*s++);
    }
}

static void uart_puthex(uint32_t v)
{
    int shift;
    uart_puts("0x");
    for (shift = 28; shift >= 0; shift -= 4) {
        uart_putc("0123456789abcdef"[(v >> shift) & 0xfu]);
    }
}

void bed_trap(void);
__attribute__((interrupt("machine"), aligned(4))) void bed_trap(void)
{
    uint32_t mcause, mepc, mtval;
    __asm__ volatile("csrr %0, mcause" : "=r"(mcause));
    __asm__ volatile("csrr %0, mepc" : "=r"(mepc));
    __asm__ volatile("csrr %0, mtval" : "=r"(mtval));
    uart_puts("\n*** trap mcause=");
    uart_puthex(mcause);
    uart_puts(" mepc=");
    uart_puthex(mepc);
    uart_puts(" mtval=");
    uart_puthex(mtval);
    uart_puts("\n");
    _exit(125);
}

__attribute__((constructor)) static void bed_init(void)
{
    __asm__ volatile("csrw mtvec, %0" : : "r"(&bed_trap));
}
