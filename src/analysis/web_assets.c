/* The explorer's HTML/JS/CSS (web/), embedded in the binary so that
 * `saeflow explore` works from any folder without the source tree. The files
 * are pulled in verbatim by the assembler (.incbin); CMake passes the
 * absolute web/ folder as SF_WEB_DIR and lists the files as OBJECT_DEPENDS so
 * an edit rebuilds this object. */
#include "analysis/internal.h"

#ifndef SF_WEB_DIR
#error "SF_WEB_DIR must name the web/ folder (set in CMakeLists.txt)"
#endif

#define SF_INCBIN(sym, file)                                                                       \
    __asm__(".section .rodata\n"                                                                   \
            ".balign 16\n"                                                                         \
            ".global " #sym "\n" #sym ":\n"                                                        \
            ".incbin \"" SF_WEB_DIR "/" file "\"\n"                                                \
            ".global " #sym "_end\n" #sym "_end:\n"                                                \
            ".byte 0\n"                                                                            \
            ".previous\n");                                                                        \
    extern const char sym[], sym##_end[]

SF_INCBIN(sf_web_index_html, "index.html");
SF_INCBIN(sf_web_app_js, "app.js");
SF_INCBIN(sf_web_style_css, "style.css");

const sf_web_asset sf_web_assets[] = {
    {"index.html", sf_web_index_html, sf_web_index_html_end},
    {"assets/app.js", sf_web_app_js, sf_web_app_js_end},
    {"assets/style.css", sf_web_style_css, sf_web_style_css_end},
};
const int sf_web_n_assets = 3;
