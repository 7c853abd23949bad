typedef int ck_placeholder_t; /* replaced by the real module */
