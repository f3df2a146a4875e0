# Installs the libraries (hitch, and hitch_dist for MPI programs), their headers
# (include/hitch/{core,ops,nn,optim,dist}/*.h and include/hitch/hitch.h, included as <hitch/...>),
# a CMake package (find_package(hitch), then target_link_libraries(app PRIVATE hitch::hitch), or
# hitch::dist for dist/) and a pkg-config file (hitch.pc; the core library only).
include(CMakePackageConfigHelpers)

install(TARGETS hitch EXPORT hitchTargets
  ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR}
  LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR})
install(DIRECTORY core ops nn optim DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}/hitch
  FILES_MATCHING PATTERN "*.h")
if(HITCH_WITH_MPI)  # a separate export set: hitchConfig.cmake loads it only where MPI is found
  install(TARGETS hitch_dist EXPORT hitchDistTargets
    ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR}
    LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR})
  install(DIRECTORY dist DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}/hitch FILES_MATCHING PATTERN "*.h")
  install(EXPORT hitchDistTargets NAMESPACE hitch:: DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/hitch)
endif()
install(FILES hitch.h DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}/hitch)
install(EXPORT hitchTargets NAMESPACE hitch:: DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/hitch)
configure_package_config_file(cmake/hitchConfig.cmake.in ${CMAKE_CURRENT_BINARY_DIR}/hitchConfig.cmake
  INSTALL_DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/hitch)
write_basic_package_version_file(${CMAKE_CURRENT_BINARY_DIR}/hitchConfigVersion.cmake
  COMPATIBILITY SameMinorVersion)
install(FILES ${CMAKE_CURRENT_BINARY_DIR}/hitchConfig.cmake ${CMAKE_CURRENT_BINARY_DIR}/hitchConfigVersion.cmake
  cmake/hitchOpenBLAS.cmake DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/hitch)
# The .pc file is relocatable (prefix from ${pcfiledir}), so `cmake --install --prefix P` works.
file(RELATIVE_PATH HITCH_PC_TO_PREFIX "/${CMAKE_INSTALL_LIBDIR}/pkgconfig" "/")
string(REGEX REPLACE "/$" "" HITCH_PC_TO_PREFIX "${HITCH_PC_TO_PREFIX}")
configure_file(cmake/hitch.pc.in ${CMAKE_CURRENT_BINARY_DIR}/hitch.pc @ONLY)
install(FILES ${CMAKE_CURRENT_BINARY_DIR}/hitch.pc DESTINATION ${CMAKE_INSTALL_LIBDIR}/pkgconfig)
