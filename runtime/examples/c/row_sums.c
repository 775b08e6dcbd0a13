/*
 * Example Switchyard plugin in C: sums each line of a text/csv body, times a factor.
 *
 *   POST /score  "1,2,3\n4,5,6"   ->   [6, 15]        (with SCALE=1, the default)
 *
 * `init` reads the deployment's environment variable SCALE (a number); `run` answers a JSON
 * list with one sum per non-empty line, or SWITCHYARD_BAD_INPUT (HTTP 400) when a field is
 * not a number. Build (see runtime/README.md):
 *
 *   cc -shared -fPIC -O2 -I runtime/include runtime/examples/c/row_sums.c -o row_sums.so
 */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "switchyard_plugin.h"

typedef struct {
    double scale;
    char *out; /* reused answer buffer: one thread at a time per handle (see the header) */
    size_t cap;
} row_sums_t;

static void say(switchyard_respond_fn respond, void *ctx, uint16_t status, const char *msg) {
    respond(ctx, status, "text/plain", 10, (const uint8_t *)msg, strlen(msg));
}

static int32_t row_sums_init(const char *model_dir, size_t model_dir_len, const switchyard_env_pair_t *env,
                             size_t env_len, void **handle, switchyard_error_fn error, void *error_ctx) {
    (void)model_dir;
    (void)model_dir_len;
    double scale = 1.0;
    for (size_t i = 0; i < env_len; i++) {
        if (env[i].key_len == 5 && memcmp(env[i].key, "SCALE", 5) == 0) {
            char text[64] = {0};
            size_t n = env[i].value_len < sizeof text - 1 ? env[i].value_len : sizeof text - 1;
            memcpy(text, env[i].value, n);
            char *end = NULL;
            scale = strtod(text, &end);
            if (end == text || *end != '\0' || !isfinite(scale)) {
                const char *msg = "SCALE must be a number";
                error(error_ctx, msg, strlen(msg));
                return SWITCHYARD_MODEL_ERROR;
            }
        }
    }
    row_sums_t *self = calloc(1, sizeof *self);
    if (!self) {
        error(error_ctx, "out of memory", 13);
        return SWITCHYARD_MODEL_ERROR;
    }
    self->scale = scale;
    *handle = self;
    return SWITCHYARD_OK;
}

static int append(row_sums_t *self, size_t *len, const char *text) {
    size_t n = strlen(text);
    if (*len + n + 1 > self->cap) {
        size_t cap = (self->cap ? self->cap * 2 : 256) + n;
        char *grown = realloc(self->out, cap);
        if (!grown) return 0;
        self->out = grown;
        self->cap = cap;
    }
    memcpy(self->out + *len, text, n);
    *len += n;
    return 1;
}

static int32_t row_sums_run(void *handle, const uint8_t *body, size_t body_len, const char *content_type,
                            size_t content_type_len, switchyard_respond_fn respond, void *respond_ctx) {
    (void)content_type;
    (void)content_type_len;
    row_sums_t *self = handle;
    /* A NUL-terminated copy, so strtod cannot read past the body. */
    char *text = malloc(body_len + 1);
    if (!text) {
        say(respond, respond_ctx, 424, "out of memory");
        return SWITCHYARD_MODEL_ERROR;
    }
    memcpy(text, body, body_len);
    text[body_len] = '\0';
    size_t len = 0;
    int first = 1, ok = append(self, &len, "[");
    for (char *line = text; ok && line && *line;) {
        char *next = strchr(line, '\n');
        if (next) *next++ = '\0';
        double sum = 0;
        int fields = 0;
        for (char *p = line; *p && *p != '\r';) {
            char *end = NULL;
            errno = 0;
            double x = strtod(p, &end);
            if (end == p || errno == ERANGE) {
                free(text);
                say(respond, respond_ctx, 400, "expected lines of comma-separated numbers, e.g. 1,2,3");
                return SWITCHYARD_BAD_INPUT;
            }
            sum += x;
            fields++;
            p = end;
            while (*p == ' ' || *p == ',') p++;
        }
        if (fields) {
            char number[64];
            snprintf(number, sizeof number, "%s%.17g", first ? "" : ", ", sum * self->scale);
            ok = append(self, &len, number);
            first = 0;
        }
        line = next;
    }
    free(text);
    if (!ok || !append(self, &len, "]")) {
        say(respond, respond_ctx, 424, "out of memory");
        return SWITCHYARD_MODEL_ERROR;
    }
    respond(respond_ctx, 200, "application/json", 16, (const uint8_t *)self->out, len);
    return SWITCHYARD_OK;
}

static void row_sums_destroy(void *handle) {
    row_sums_t *self = handle;
    if (self) free(self->out);
    free(self);
}

static const switchyard_plugin_t TABLE = {
    SWITCHYARD_ABI_VERSION, sizeof(switchyard_plugin_t), row_sums_init, row_sums_run, row_sums_destroy,
};

SWITCHYARD_EXPORT const switchyard_plugin_t *switchyard_plugin(void) { return &TABLE; }
