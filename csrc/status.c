#include "lstm_fast.h"

const char *lf_status_string(lf_status status) {
    switch (status) {
    case LF_OK: return "success";
    case LF_ERR_NULL_POINTER: return "a required pointer was NULL";
    case LF_ERR_BAD_DIMENSION: return "a dimension is out of range or inconsistent";
    case LF_ERR_OVERFLOW: return "the sizes are too large: a buffer size would overflow";
    case LF_ERR_BAD_CELL_KIND: return "unknown cell kind, or an option this cell kind does not have";
    case LF_ERR_BAD_DTYPE: return "unknown dtype: only float32 and float64 are supported";
    case LF_ERR_BAD_LENGTH: return "a sequence length is outside [0, T]";
    case LF_ERR_BAD_ISA: return "unknown ISA name (expected auto, portable, avx2 or avx512)";
    case LF_ERR_ISA_UNAVAILABLE: return "this ISA was not compiled in, or this CPU/OS cannot run it";
    case LF_ERR_BAD_INDEX: return "layer or direction index out of range";
    case LF_ERR_BUFFER_TOO_SMALL: return "a buffer is smaller than the plan requires";
    case LF_ERR_OUT_OF_MEMORY: return "out of memory";
    case LF_ERR_THREADS: return "the operating system refused to create a thread";
    case LF_ERR_BAD_OPTION:
        return "invalid cell option: unknown activation or flag, alpha/beta not finite "
               "(as float32 values in a float32 plan), or clip negative or not finite";
    default: return "unknown status code";
    }
}
