# Installs the library, its headers (include/hitch/{core,ops,nn,optim}/*.h and include/hitch/hitch.h,
# included as <hitch/...>), a CMake package (find_package(hitch), then
# target_link_libraries(app PRIVATE hitch::hitch)) and a pkg-config file (hitch.pc).
include(CMakePackageConfigHelpers)

install(TARGETS hitch EXPORT hitchTargets
  ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR}
  LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR})
install(DIRECTORY core ops nn optim DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}/hitch
  FILES_MATCHING PATTERN "*.h")
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
