/* placeholder so the library exists until its first source lands */
typedef int sf_kernels_placeholder_;
