/*
 * armv6m_startup.c -- startup for C programs run by tests/beds on an
 * emulated Cortex-M0/M0+ (qemu-system-arm -M microbit, or -M mps2-an385),
 * linked with newlib's semihosting library (--specs=rdimon.specs).
 *
 *   vector table    initial SP and reset vector at address 0 (armv6m.ld)
 *   reset           copy .data, clear .bss, open the semihosting stdio
 *                   handles, run constructors, exit(main())
 *   stdout/stderr   semihosting: QEMU (-semihosting-config target=native)
 *                   writes them to its own stdout/stderr
 *   exit(code)      semihosting SYS_EXIT_EXTENDED: QEMU exits with `code`
 *   faults          print the faulting PC on stderr, exit with 125
 */
#include <stdint.h>
#include <stdlib.h>
#include <unistd.h>

extern uint32_t __stack_top[];
extern uint32_t __data_load[], __data_start[], __data_end[];
extern uint32_t __bss_start[], __bss_end[];
extern int main(void);
extern void initialise_monitor_handles(void);
extern void __libc_init_array(void);

void bed_reset(void);
void bed_fault(void);
void bed_fault_report(const uint32_t *frame);
void _init(void);
void _fini(void);

/* __libc_init_array calls these around the constructor lists. */
void _init(void) {}
void _fini(void) {}

__attribute__((noreturn)) void bed_reset(void)
{
    const uint32_t *src = __data_load;
    uint32_t *dst = __data_start;
    while (dst < __data_end) {
        *dst++ = *src++;
    }
    for (dst = __bss_start; dst < __bss_end;) {
        *dst++ = 0;
    }
    initialise_monitor_handles();
    __libc_init_array();
    exit(main());
}

static void put_hex(char *p, uint32_t v)
{
    int i;
    for (i = 7; i >= 0; i--) {
        p[i] = "0123456789abcdef"[v & 0xfu];
        v >>= 4;
    }
}

/* frame: the registers the core stacked on exception entry (r0-r3, r12,
 * lr, pc, xpsr); only the main stack is used. */
__attribute__((noreturn)) void bed_fault_report(const uint32_t *frame)
{
    char msg[] = "\n*** fault pc=0x........ lr=0x........\n";
    put_hex(msg + 16, frame[6]);
    put_hex(msg + 30, frame[5]);
    (void)write(2, msg, sizeof msg - 1);
    _exit(125);
}

__attribute__((naked)) void bed_fault(void)
{
    __asm__ volatile("mov r0, sp\n\t"
                     "ldr r1, =bed_fault_report\n\t"
                     "bx r1\n\t"
                     ".ltorg\n\t");
}

typedef void (*bed_vector_t)(void);

/* Core exceptions only: the programs run with interrupts disabled. */
__attribute__((section(".vectors"), used)) const bed_vector_t bed_vectors[16] = {
    (bed_vector_t)(uintptr_t)__stack_top, /* initial SP */
    bed_reset,                            /* reset */
    bed_fault,                            /* NMI */
    bed_fault,                            /* HardFault */
    bed_fault, bed_fault, bed_fault,      /* reserved on v6-M (MemManage, BusFault, UsageFault on v7-M) */
    0, 0, 0, 0,                           /* reserved */
    bed_fault,                            /* SVCall */
    bed_fault, 0,                         /* reserved (DebugMonitor on v7-M) */
    bed_fault,                            /* PendSV */
    bed_fault,                            /* SysTick */
};
