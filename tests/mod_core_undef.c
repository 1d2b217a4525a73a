/* mod_core_undef.c: a module that exists but cannot be loaded with
 * RTLD_NOW (an undefined symbol), for check_core's -ELIBACC tests. */
int mod_core_no_such_symbol(void);
int mod_core_undef_user(void);
int mod_core_undef_user(void)
{
    return mod_core_no_such_symbol();
}
