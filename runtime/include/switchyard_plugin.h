/*
 * switchyard_plugin.h: the C ABI of Switchyard native scoring plugins, version 1.0.
 *
 * A plugin is a shared library (.so) named by a deployment's
 * `code_configuration.scoring_script`, in its `code_configuration.code` folder. It exports ONE
 * symbol, `switchyard_plugin`, a function returning a pointer to a static table:
 *
 *     static const switchyard_plugin_t TABLE = {
 *         SWITCHYARD_ABI_VERSION, sizeof(switchyard_plugin_t), my_init, my_run, my_destroy,
 *     };
 *     SWITCHYARD_EXPORT const switchyard_plugin_t *switchyard_plugin(void) { return &TABLE; }
 *
 * Versioning. `abi_version` is (major << 16) | minor. The host refuses a plugin whose major
 * version differs from its own, or whose `struct_size` is smaller than the table of the
 * host's version (it reads `abi_version` and `struct_size` first, and nothing past
 * `struct_size`); the deployment then fails with a message naming both versions. A minor
 * version only appends fields, so a plugin built for 1.x loads in any 1.y host whose table it
 * covers.
 *
 * Instances. The host calls `init` once per instance (a deployment's `instance_count`), each
 * on a thread of its choosing, and keeps the returned handle until it calls `destroy`. A
 * handle is used by ONE THREAD AT A TIME: the host never calls `run` twice at once on the same
 * handle (an instance serves one request at a time), but different handles may run at the
 * same time on different threads, so state shared between handles (globals) needs a lock.
 * Successive calls on one handle may come from different threads. The library stays loaded
 * while any handle of it lives.
 *
 * Memory. Nothing crosses allocators and nothing is freed by the other side: every pointer the
 * host passes is valid only during the call, and the plugin hands its answer to the host's
 * callback, which copies it before returning (the plugin may free its buffers right after).
 * Strings are UTF-8 bytes with a length, not NUL-terminated. Pointers with a length of 0 may
 * be NULL.
 *
 * Return codes of `init` and `run`:
 *   SWITCHYARD_OK           done; `run` called `respond` exactly once with the answer
 *                           (its status, content type and body are the HTTP answer).
 *   SWITCHYARD_BAD_INPUT    the request is not what the plugin takes: HTTP 400, with the
 *                           bytes handed to `respond` (if any) as the message; say what is
 *                           expected.
 *   SWITCHYARD_MODEL_ERROR  the model failed: HTTP 424, the message in
 *                           `ms-azureml-model-error-reason`; the instance keeps serving.
 *                           From `init`: the deployment fails with the message handed to
 *                           `error`.
 *   SWITCHYARD_PANIC        the plugin's state is broken (a caught panic or exception): HTTP
 *                           424, and the host destroys the instance and starts another.
 *   anything else           treated as SWITCHYARD_MODEL_ERROR.
 *
 * Crashes. In-process plugins share the server's address space: a segfault or abort kills
 * every deployment of the endpoint. Deploy untrusted or unproven plugins with
 * `isolation: process` (the deployment YAML), which runs each instance in a worker process:
 * a crash then costs the request it was serving (424) and one instance restart. Never let a
 * C++ exception or a Rust panic unwind out of these functions.
 */
#ifndef SWITCHYARD_PLUGIN_H
#define SWITCHYARD_PLUGIN_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define SWITCHYARD_ABI_MAJOR 1
#define SWITCHYARD_ABI_MINOR 0
#define SWITCHYARD_ABI_VERSION ((uint32_t)((SWITCHYARD_ABI_MAJOR << 16) | SWITCHYARD_ABI_MINOR))

#define SWITCHYARD_OK 0
#define SWITCHYARD_BAD_INPUT 1
#define SWITCHYARD_MODEL_ERROR 2
#define SWITCHYARD_PANIC 3

#if defined(_WIN32)
#define SWITCHYARD_EXPORT __declspec(dllexport)
#else
#define SWITCHYARD_EXPORT __attribute__((visibility("default")))
#endif

/* One of the deployment's `environment_variables`. */
typedef struct switchyard_env_pair {
    const char *key;
    size_t key_len;
    const char *value;
    size_t value_len;
} switchyard_env_pair_t;

/* The host's sink for an init error message (copied before it returns). */
typedef void (*switchyard_error_fn)(void *ctx, const char *message, size_t len);

/* The host's sink for an answer (copied before it returns). `status` is the HTTP status
 * (100..999; other values become 500). */
typedef void (*switchyard_respond_fn)(void *ctx, uint16_t status, const char *content_type,
                                      size_t content_type_len, const uint8_t *body,
                                      size_t body_len);

/* Creates one instance from the model at `model_dir` (the deployment's `model.path`, a
 * folder or a file) and the deployment's environment variables; stores it in `*handle`. On
 * failure, hands a message to `error(error_ctx, ...)` and returns non-zero. */
typedef int32_t (*switchyard_init_fn)(const char *model_dir, size_t model_dir_len,
                                      const switchyard_env_pair_t *env, size_t env_len,
                                      void **handle, switchyard_error_fn error, void *error_ctx);

/* Scores one request: the body (gzip already decoded) and its Content-Type (empty if none).
 * Calls `respond(respond_ctx, ...)` with the answer (or, for BAD_INPUT and MODEL_ERROR, with
 * the message as body) and returns a code above. */
typedef int32_t (*switchyard_run_fn)(void *handle, const uint8_t *body, size_t body_len,
                                     const char *content_type, size_t content_type_len,
                                     switchyard_respond_fn respond, void *respond_ctx);

/* Frees one instance; the handle is not used again. */
typedef void (*switchyard_destroy_fn)(void *handle);

/* The table; fields are only ever appended (minor versions). */
typedef struct switchyard_plugin {
    uint32_t abi_version; /* SWITCHYARD_ABI_VERSION as built */
    uint32_t struct_size; /* sizeof(switchyard_plugin_t) as built */
    switchyard_init_fn init;
    switchyard_run_fn run;
    switchyard_destroy_fn destroy;
} switchyard_plugin_t;

/* The one exported symbol (declare it with SWITCHYARD_EXPORT). */
typedef const switchyard_plugin_t *(*switchyard_entry_fn)(void);
#define SWITCHYARD_ENTRY_SYMBOL "switchyard_plugin"

#ifdef __cplusplus
}
#endif

#endif /* SWITCHYARD_PLUGIN_H */
