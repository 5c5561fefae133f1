/* module.c: the module taskwatch._core._speedups itself: its functions (configure, invalidate,
 * next_id, task_type), PyInit (which interns the strings the other files use and makes the types),
 * and the two helpers every part uses: now() and report_internal().
 *
 * speedups.h says what the accelerator is for and which file holds what.
 */
#include "speedups.h"

#include <time.h>

PyObject *s_cr_code, *s_gi_code, *s_tw_rec, *s_on_failed, *s_cancel_settled,
    *s_schedule_orphan_check, *s_trim_source_traceback, *s_context, *s_eager_start,
    *s_on_exception_read;
PyObject *kw_loop_context, *kw_loop_name_context, *kw_context;
static PyObject *internal_error_fn; /* taskwatch._guard.internal_error */
#if !defined(__linux__)
static PyObject *monotonic_fn; /* time.monotonic, off Linux */
#endif
long long next_id_value;

/* ---------------------------------------------------------------------------------------------
 * helpers */

double
tw_now(void)
{
#if defined(__linux__)
    /* time.monotonic() reads this same clock on Linux. */
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
#else
    PyObject *r = PyObject_CallNoArgs(monotonic_fn);
    double v = r ? PyFloat_AsDouble(r) : 0.0;
    Py_XDECREF(r);
    if (PyErr_Occurred()) {
        PyErr_Clear();
    }
    return v;
#endif
}

/* Hand the pending exception to taskwatch's internal_error(where) as the handled exception, so it
 * is counted and logged once like every other internal error, then clear it. */
void
tw_report_internal(const char *where)
{
    PyObject *type, *value, *tb;
    PyErr_Fetch(&type, &value, &tb);
    PyErr_NormalizeException(&type, &value, &tb);
    if (value != NULL && tb != NULL) {
        PyException_SetTraceback(value, tb);
    }
    if (internal_error_fn != NULL && value != NULL) {
        PyObject *prev = PyErr_GetHandledException();
        PyErr_SetHandledException(value);
        PyObject *r = PyObject_CallFunction(internal_error_fn, "s", where);
        if (r == NULL) {
            PyErr_Clear();
        }
        Py_XDECREF(r);
        PyErr_SetHandledException(prev);
        Py_XDECREF(prev);
    }
    Py_XDECREF(type);
    Py_XDECREF(value);
    Py_XDECREF(tb);
}

/* ---------------------------------------------------------------------------------------------
 * module */

static PyObject *
configure_module(PyObject *module, PyObject *args)
{
    PyObject *internal_error, *classify, *boundary, *made_by_library;
    if (!PyArg_ParseTuple(args, "OOO!O:configure", &internal_error, &classify, &PySet_Type, &boundary,
                          &made_by_library)) {
        return NULL;
    }
    Py_INCREF(made_by_library);
    Py_XSETREF(made_by_library_fn, made_by_library);
    Py_INCREF(internal_error);
    Py_XSETREF(internal_error_fn, internal_error);
    Py_INCREF(classify);
    Py_XSETREF(classify_fn, classify);
    Py_INCREF(boundary);
    Py_XSETREF(boundary_set, boundary);
    tw_code_cache_clear();
    Py_RETURN_NONE;
}

static PyObject *
invalidate(PyObject *module, PyObject *unused)
{
    tw_code_cache_clear();
    Py_RETURN_NONE;
}

static PyObject *
next_id(PyObject *module, PyObject *unused)
{
    return PyLong_FromLongLong(++next_id_value);
}

static PyMethodDef module_methods[] = {
    {"configure", configure_module, METH_VARARGS,
     "configure(internal_error, is_internal, boundary_ids, made_by_library): the Python side the "
     "C side calls"},
    {"invalidate", invalidate, METH_NOARGS, "forget cached code classifications"},
    {"next_id", next_id, METH_NOARGS, "the next task id (never reused, shared with Python)"},
    {"sampler_start", tw_sampler_start, METH_VARARGS,
     "sampler_start(interval_s, idle_s, thread_ident, native_id, get_running_loop, current_task, "
     "py_current_tasks or None, sites): start the CPU sampler's thread"},
    {"sampler_stop", tw_sampler_stop, METH_NOARGS, "stop the sampler's thread and wait for it"},
    {"sampler_totals", tw_sampler_totals, METH_NOARGS, "the CPU seconds sampled, by where they went"},
    {"sampler_after_fork", tw_sampler_after_fork, METH_NOARGS,
     "in a forked child: forget the parent's sampler thread"},
    {"sampler_stats", tw_sampler_stats, METH_NOARGS, "(requests, refused, wakeups, skipped while asleep, failed samples, first failure's type) so far"},
    {"switches_watch", tw_switches_watch, METH_O,
     "switches_watch(thread_ident) -> bool: measure its stretches without a context switch (3.14+)"},
    {"switches_unwatch", tw_switches_unwatch, METH_O, "switches_unwatch(thread_ident): stop that"},
    {"switches_gap", tw_switches_gap, METH_O,
     "switches_gap(thread_ident) -> float | None: its longest stretch since the last call, s"},
    {"switches_stop", tw_switches_stop, METH_NOARGS, "measure no thread, remove the watcher"},
    {"switches_after_fork", tw_switches_after_fork, METH_NOARGS,
     "in a forked child: forget the parent's other threads"},
    {"task_type", tw_make_task_type, METH_VARARGS, "task_type(asyncio.Task, globals) -> taskwatch's C Task"},
    {NULL},
};

static struct PyModuleDef speedups_module = {
    PyModuleDef_HEAD_INIT, "taskwatch._core._speedups",
    "taskwatch's per-task hot path in C (optional accelerator).", -1, module_methods,
};

PyMODINIT_FUNC
PyInit__speedups(void)
{
#define INTERN(var, text) do { var = PyUnicode_InternFromString(text); if (var == NULL) return NULL; } while (0)
    INTERN(s_cr_code, "cr_code");
    INTERN(s_gi_code, "gi_code");
    INTERN(s_tw_rec, "_tw_rec");
    INTERN(s_on_failed, "on_failed");
    INTERN(s_cancel_settled, "cancel_settled");
    INTERN(s_schedule_orphan_check, "schedule_orphan_check");
    INTERN(s_trim_source_traceback, "trim_source_traceback");
    INTERN(s_context, "context");
    INTERN(s_eager_start, "eager_start");
    INTERN(s_on_exception_read, "on_exception_read");
#undef INTERN
    kw_loop_context = Py_BuildValue("(ss)", "loop", "context");
    kw_loop_name_context = Py_BuildValue("(sss)", "loop", "name", "context");
    kw_context = Py_BuildValue("(s)", "context");
    if (kw_loop_context == NULL || kw_loop_name_context == NULL || kw_context == NULL) {
        return NULL;
    }
#if !defined(__linux__)
    PyObject *time_mod = PyImport_ImportModule("time");
    if (time_mod == NULL) {
        return NULL;
    }
    monotonic_fn = PyObject_GetAttrString(time_mod, "monotonic");
    Py_DECREF(time_mod);
    if (monotonic_fn == NULL) {
        return NULL;
    }
#endif
    RecordType = (PyTypeObject *)PyType_FromSpec(&record_spec);
    if (RecordType == NULL || PyType_Ready(&RecorderType) < 0) {
        return NULL;
    }
    PyObject *m = PyModule_Create(&speedups_module);
    if (m == NULL) {
        return NULL;
    }
    Py_INCREF(RecordType);
    if (PyModule_AddObject(m, "RecordType", (PyObject *)RecordType) < 0) {
        Py_DECREF(RecordType);
        Py_DECREF(m);
        return NULL;
    }
    Py_INCREF(&RecorderType);
    if (PyModule_AddObject(m, "Recorder", (PyObject *)&RecorderType) < 0) {
        Py_DECREF(&RecorderType);
        Py_DECREF(m);
        return NULL;
    }
    if (PyModule_AddIntConstant(m, "FLAG_PRECISE", PRECISE) < 0 ||
        PyModule_AddIntConstant(m, "FLAG_RELEASED", RELEASED) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
