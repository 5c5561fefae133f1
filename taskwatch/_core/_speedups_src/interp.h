/* interp.h: every use of CPython's interpreter internals in taskwatch._speedups, and only here.
 *
 * 3.11-3.15: walk the interpreter's own frames, so recording a task never makes frame objects (on
 * 3.11+ PyEval_GetFrame allocates one for asyncio.create_task's frame on every call; on 3.14 and
 * 3.15 the public walk, PyFrame_GetBack, cost 580 more instructions per task on aiohttp's path).
 * These structures are internal, hence pinned to the versions this file was checked against; any
 * other version takes the public frame API (TW_FAST_FRAMES is then not defined).
 *
 * No other file includes an internal header or reads an interpreter frame: recorder.c (the only
 * file that includes this one) walks the frames through the small functions below. A new CPython
 * version is ported here (tests/test_speedups.py checks that the internals stay in this file).
 */
#ifndef TW_INTERP_H
#define TW_INTERP_H

#include "speedups.h"

#if PY_VERSION_HEX >= 0x030B0000 && PY_VERSION_HEX < 0x03100000
#define TW_FAST_FRAMES 1
#define Py_BUILD_CORE 1
#if PY_VERSION_HEX >= 0x030E0000
#include "internal/pycore_interpframe.h"
#else
#include "internal/pycore_frame.h"
#endif
#undef Py_BUILD_CORE
#if PY_VERSION_HEX >= 0x030D0000
#define TW_TOP_FRAME(ts) ((ts)->current_frame)
#define TW_FRAME_CODE(f) ((PyObject *)_PyFrame_GetCode(f))
#else
#define TW_TOP_FRAME(ts) ((ts)->cframe->current_frame)
#define TW_FRAME_CODE(f) ((PyObject *)(f)->f_code)
#endif

/* One of the interpreter's frames (no frame object). */
typedef _PyInterpreterFrame InterpFrame;

static inline InterpFrame *
first_complete(InterpFrame *f)
{
    while (f != NULL && _PyFrame_IsIncomplete(f)) {
        f = f->previous;
    }
    return f;
}

/* The running thread's innermost complete frame, or NULL. */
static inline InterpFrame *
tw_frame_top(void)
{
    return first_complete(TW_TOP_FRAME(PyThreadState_Get()));
}

/* The complete frame that called f, or NULL. */
static inline InterpFrame *
tw_frame_back(InterpFrame *f)
{
    return first_complete(f->previous);
}

/* f's code object (borrowed). */
static inline PyObject *
tw_frame_code(InterpFrame *f)
{
    return TW_FRAME_CODE(f);
}

/* f's instruction offset in bytes, as f_lasti (PyFrame_GetLasti) gives it. */
static inline int
tw_frame_lasti(InterpFrame *f)
{
    return _PyInterpreterFrame_LASTI(f) * (int)sizeof(_Py_CODEUNIT);
}
#endif

#endif /* TW_INTERP_H */
