/*
 * cpu_features.c -- can this CPU and OS run an ISA, and how large are the
 * caches that feed one core?
 *
 * Compiled at the baseline (no -m flags) because it runs before anything
 * knows what the CPU supports. The CPU flag alone is not enough: the OS must
 * also save the wide registers on context switch, which XGETBV reports
 * (XCR0). Nothing is cached: detection is only asked for when a plan is
 * made, and a cache would be shared mutable state. It is not free in a
 * virtual machine, where CPUID and XGETBV trap to the hypervisor (~5 us for
 * lf_isa_best on the bench machine), so the Python layer releases the GIL
 * around it.
 */
#include "internal.h"
#include <unistd.h>
#if defined(__linux__)
#include <sys/syscall.h>
#endif

#if defined(__x86_64__) || defined(_M_X64) || defined(__i386__)
#define LF_X86 1
#include <cpuid.h>

static uint64_t read_xcr0(void) {
    uint32_t eax, edx;
    /* Raw opcode rather than _xgetbv(): that intrinsic needs -mxsave. */
    __asm__ volatile(".byte 0x0f, 0x01, 0xd0" : "=a"(eax), "=d"(edx) : "c"(0));
    return ((uint64_t)edx << 32) | eax;
}

/* AMX-TILE and AMX-BF16 (CPUID 7.0 EDX bits 24, 22), AVX512-BF16 for the
 * splits (7.1 EAX bit 5), tile state enabled in XCR0 (bits 17, 18), and
 * Linux's per-process permission to use the 8 KiB of tile data, which it
 * grants on request (arch_prctl ARCH_REQ_XCOMP_PERM; a tile instruction
 * without it is killed by SIGILL). Asking again is harmless, so the
 * request is repeated with every detection rather than remembered. Other
 * systems: no AMX. */
static int amx_usable(unsigned leaf7_edx, uint64_t xcr0) {
#if defined(__linux__) && defined(__x86_64__) && defined(SYS_arch_prctl)
    const int tile = (leaf7_edx >> 24) & 1, bf16 = (leaf7_edx >> 22) & 1;
    if (!tile || !bf16 || (xcr0 & 0x60000) != 0x60000) return 0;
    unsigned a, b, c, d;
    __cpuid_count(7, 1, a, b, c, d);
    if (!((a >> 5) & 1)) return 0;
    const long arch_req_xcomp_perm = 0x1023, xfeature_xtiledata = 18;
    return syscall(SYS_arch_prctl, arch_req_xcomp_perm, xfeature_xtiledata) == 0;
#else
    (void)leaf7_edx;
    (void)xcr0;
    return 0;
#endif
}

static int x86_supports(lf_isa isa) {
    unsigned a, b, c, d;
    if (!__get_cpuid(1, &a, &b, &c, &d)) return 0;
    const int has_fma = (c >> 12) & 1, has_osxsave = (c >> 27) & 1, has_avx = (c >> 28) & 1;
    if (!(has_osxsave && has_avx && has_fma)) return 0;
    const uint64_t xcr0 = read_xcr0();
    if ((xcr0 & 0x6) != 0x6) return 0; /* XMM and YMM state */
    if (__get_cpuid_max(0, 0) < 7) return 0;
    __cpuid_count(7, 0, a, b, c, d);
    const int has_avx2 = (b >> 5) & 1;
    if (isa == LF_ISA_AVX2) return has_avx2;
    const int f = (b >> 16) & 1, dq = (b >> 17) & 1, bw = (b >> 30) & 1, vl = (b >> 31) & 1;
    /* opmask, upper halves of ZMM0-15, ZMM16-31 */
    const int avx512 = has_avx2 && f && dq && bw && vl && (xcr0 & 0xE0) == 0xE0;
    if (isa == LF_ISA_AVX512) return avx512;
    /* (the leaves already read: each CPUID is a VM exit under a hypervisor) */
    if (isa == LF_ISA_AMX) return avx512 && amx_usable(d, xcr0);
    return 0;
}
#endif

LF_HIDDEN int lf_cpu_supports(lf_isa isa) {
    if (isa == LF_ISA_PORTABLE) return 1;
#ifdef LF_X86
    return x86_supports(isa);
#else
    return 0;
#endif
}

#ifdef LF_X86
/* CPUID 0x80000006 (the L2 in ECX, AMD's L3 in EDX); 0 if the CPU lacks it. */
static int cache_leaf(unsigned *ecx, unsigned *edx) {
    if (__get_cpuid_max(0x80000000u, 0) < 0x80000006u) return 0;
    unsigned a, b;
    __cpuid(0x80000006u, a, b, *ecx, *edx);
    return 1;
}
#endif

/* CPUID 0x80000006 ECX[31:16] (L2 size in KiB) is defined alike by Intel and
 * AMD; elsewhere the C library may know (glibc reads the same registers, or
 * the kernel's cache description on other architectures). */
int64_t lf_cpu_l2_bytes(void) {
#ifdef LF_X86
    unsigned c, d;
    return cache_leaf(&c, &d) ? (int64_t)(c >> 16) * 1024 : 0;
#elif defined(_SC_LEVEL2_CACHE_SIZE)
    const long bytes = sysconf(_SC_LEVEL2_CACHE_SIZE);
    return bytes > 0 ? (int64_t)bytes : 0;
#else
    return 0;
#endif
}

/* AMD's Zen cores read their L3 at about the rate of their L2 (the Zen 4 VM
 * of bench/RESULTS.md: 88-95 GB/s against 97-124), where Intel's server
 * cores, behind a mesh, read it at a fraction (the Intel VM: 30 GB/s
 * against 186). So on AMD the L3 counts: CPUID 0x80000006 EDX[31:18], in
 * 512 KiB units, is AMD's (Intel leaves it zero). Each CPUID is a VM exit
 * under a hypervisor (~15 us on the Intel VM), so the leaf is read once. */
LF_HIDDEN int64_t lf_cpu_stream_cache_bytes(void) {
#ifdef LF_X86
    unsigned a, vendor_b, vendor_c, vendor_d, c, d;
    __cpuid(0, a, vendor_b, vendor_c, vendor_d);
    /* "AuthenticAMD" and Hygon's "HygonGenuine" (Zen), by their first word */
    const int zen = vendor_b == 0x68747541u /* Auth */ || vendor_b == 0x6f677948u /* Hygo */;
    if (!cache_leaf(&c, &d)) return 0;
    if (zen && d >> 18) return (int64_t)(d >> 18) * 512 * 1024;
    return (int64_t)(c >> 16) * 1024;
#else
    return lf_cpu_l2_bytes();
#endif
}
