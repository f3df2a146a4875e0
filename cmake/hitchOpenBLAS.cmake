# Defines the imported target OpenBLAS::OpenBLAS after find_package(OpenBLAS CONFIG) /
# find_dependency(OpenBLAS CONFIG) succeeded. Newer OpenBLAS packages may define the target
# themselves; Debian 12's (0.3.21) sets only OpenBLAS_LIBRARIES and OpenBLAS_INCLUDE_DIRS, paths
# of the machine it runs on. Used by hitch's own build and by the installed hitchConfig.cmake.
if(NOT TARGET OpenBLAS::OpenBLAS)
  add_library(OpenBLAS::OpenBLAS INTERFACE IMPORTED)
  set_target_properties(OpenBLAS::OpenBLAS PROPERTIES
    INTERFACE_LINK_LIBRARIES "${OpenBLAS_LIBRARIES}"
    INTERFACE_INCLUDE_DIRECTORIES "${OpenBLAS_INCLUDE_DIRS}")
endif()
